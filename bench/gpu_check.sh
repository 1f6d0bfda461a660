#!/usr/bin/env bash
# One check of the GPU path on a machine with an NVIDIA GPU, offline:
#   the GPUs (nvidia-smi -L), nvcc, hwmatrix's probe, then one cell through `hwmatrix run`:
#   mainline llama.cpp as vendored by llama-cpp-python 0.3.36, a CUDA build for this
#   machine's GPUs only, the generated tiny model at Q8_0, llama-bench -p 64 -n 16 -ngl 99
#   on GPU 0 (gpus: 1), 3 repetitions. It prints the record and the total time
#   (target: under 480 s on a 16-core H100, cold build included).
#
#   bash bench/gpu_check.sh
#
# Needs no internet when the llama-cpp-python 0.3.35 and 0.3.36 sdists are already in the
# cache ($HWMATRIX_CACHE/sdists) or in $HWMATRIX_SDIST_DIR. PYTHON picks the interpreter
# (default: .venv/bin/python when there is one, else python3). Exit 0 when the cell measured.
set -euo pipefail
start=$(date +%s)
trap 'echo "gpu_check: total $(( $(date +%s) - start )) s (target < 480 s on a 16-core H100)"' EXIT
cd "$(dirname "$0")/.."

if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
SDIST_VERSIONS='"0.3.35", "0.3.36"'

echo "== GPUs (nvidia-smi -L)"
nvidia-smi -L || echo "nvidia-smi failed or is missing: no NVIDIA driver here?"

echo "== nvcc --version"
if command -v nvcc >/dev/null 2>&1; then
  nvcc --version
elif [ -x /usr/local/cuda/bin/nvcc ]; then
  /usr/local/cuda/bin/nvcc --version
  echo "(not on PATH: hwmatrix uses /usr/local/cuda/bin/nvcc)"
else
  echo "no nvcc on PATH or in /usr/local/cuda/bin: the CUDA build will fail (the record says so)"
fi

echo "== hwmatrix probe"
"$PYTHON" -m coordinator.cli probe --format table

echo "== sdists (llama-cpp-python 0.3.35 and 0.3.36), offline"
# Fetched once into the cache, or taken from HWMATRIX_SDIST_DIR; a registry that cannot be
# reached fails fast here instead of inside the run.
if ! PIP_RETRIES="${PIP_RETRIES:-0}" PIP_TIMEOUT="${PIP_TIMEOUT:-10}" "$PYTHON" - <<EOF
import sys
from agent.engine.sources import SourceError, prepare_sdist_repo
try:
    repo = prepare_sdist_repo("llama-cpp-python", [${SDIST_VERSIONS}])
except SourceError as exc:
    sys.exit(f"{exc}")
print(f"engine repo: {repo}")
EOF
then
  echo "gpu_check: cannot get the llama-cpp-python 0.3.35 and 0.3.36 sdists offline. Put" \
       "llama_cpp_python-0.3.35.tar.gz and llama_cpp_python-0.3.36.tar.gz in a folder and set" \
       "HWMATRIX_SDIST_DIR to it (on a machine with internet: python3 -m pip download --no-deps" \
       "--no-binary :all: llama-cpp-python==0.3.35 llama-cpp-python==0.3.36 -d DIR)." >&2
  exit 2
fi

work=$(mktemp -d -t hwmatrix-gpu-check.XXXXXX)
cat >"$work/gpu-check.yaml" <<EOF
name: gpu-check
description: one CUDA cell, mainline 0.3.36 on the tiny model, all layers on GPU 0
engines:
  mainline:
    kind: llama.cpp
    sdist: {package: llama-cpp-python, versions: [${SDIST_VERSIONS}]}
models:
  tiny: {generate: tiny-llama}
tool: llama-bench
args: {n_prompt: 64, n_gen: 16, ngl: 99}
repetitions: 3
hygiene: {drop_caches: "off", warmup: 1}
timeout_s: 300
matrix:
  ref:
    - {name: mainline-0.3.36, engine: mainline, tag: v0.3.36}
  quant: [Q8_0]
  gpus: [1]
EOF

echo "== hwmatrix run (matrix and store under $work)"
set +e
"$PYTHON" -m coordinator.cli run "$work/gpu-check.yaml" --store "file://$work/store" --skip-unmatched
rc=$?
set -e
echo "hwmatrix run exited with $rc"

echo "== record"
"$PYTHON" - "$work/store" <<'EOF'
import json
import sys
from pathlib import Path

store = Path(sys.argv[1])
paths = sorted(store.glob("runs/*/results/*/*.json"))
if not paths:
    sys.exit("no record: the cell did not run here (no GPU matched gpus: 1?); see the run's output above")
for path in paths:
    rec = json.loads(path.read_text())
    print(json.dumps(rec, indent=2))
    build = rec["engine"].get("build") or {}
    rows = rec.get("bench_rows") or [{}]
    means = {k: round(m["mean"], 1) for k, m in (rec.get("metrics") or {}).items() if m.get("mean") is not None}
    print(f"\nstatus {rec['status']}" + (f": {rec['error']}" if rec.get("error") else ""))
    print(f"build flags {rec['engine'].get('build_flags')}, "
          + (f"{'cached' if build['cached'] else 'built'} in {build['seconds']} s" if build else "no build"))
    print(f"backend {rows[0].get('fields', {}).get('backends')}, tokens/s {means}")
    if rec["status"] != "ok" and "build.log" in rec.get("logs", {}):
        print("\n-- build.log (last 40 lines)")
        print("\n".join((store / rec["logs"]["build.log"]).read_text(errors="replace").splitlines()[-40:]))
sys.exit(0 if all(json.loads(p.read_text())["status"] == "ok" for p in paths) else 1)
EOF
