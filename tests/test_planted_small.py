"""A small planted slowdown, 5-10% of tg and nothing of pp, against its unmodified base on
real builds: the sequential rule (`until: verdict`) must call it slower within 30 processes a
side, on this 2-core VM, as the issue asks of a quiet machine."""
from __future__ import annotations

import json
import statistics

import pytest

from tests.conftest import hwmatrix
from tests.planted import MUL_MAT, SMALL_TG_SLOWDOWN, planted_repo

pytestmark = pytest.mark.engines

MAX_PROCESSES = 30


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    """base: v0.3.36 from the shared sdist engine (already built: the same commit as the clone's
    v0.3.36, same flags); small: that commit plus the planted busy work, one ccache build.
    tg only (n_prompt 0): the stopping rule waits on every metric a pair has, and pp, which
    the plant leaves alone, would keep the pairs going for a "same" the test is not about."""
    root = tmp_path_factory.mktemp("planted-small")
    repo = planted_repo(root, "small", MUL_MAT, SMALL_TG_SLOWDOWN)
    matrix = root / "planted-small.yaml"
    matrix.write_text(f"""name: planted-small
engines:
  mainline: {{kind: llama.cpp, sdist: {{package: llama-cpp-python, versions: ["0.3.35", "0.3.36"]}}}}
  planted: {{kind: llama.cpp, repo: {repo}}}
models:
  tiny: {{generate: tiny-llama}}
args: {{n_prompt: 0, n_gen: 8, threads: 1}}
repetitions: {{min: 3, max: {MAX_PROCESSES}, until: verdict}}
hygiene: {{drop_caches: off}}
matrix:
  ref:
    - {{name: base, engine: mainline, tag: v0.3.36}}
    - {{name: small, engine: planted, branch: small}}
compare:
  - baseline: {{ref: base}}
    candidate: {{ref: small}}
    metrics: [tg_tps]
""")
    store = root / "store"
    result = hwmatrix("run", str(matrix), "--store", store.as_uri(), env={"HWMATRIX_SPOOL": str(root / "sp")})
    assert result.returncode == 0, result.stderr[-3000:]
    return store


def _records(store) -> dict[str, dict]:
    records = [json.loads(p.read_text()) for p in store.glob("runs/*/results/*/*.json")]
    return {r["params"]["ref"]: r for r in records}


def _process_tg(record: dict) -> list[float]:
    """tg t/s per measured process (the mean of its repetitions)."""
    tg = record["metrics"]["tg_tps"]
    values, at = [], 0
    for size in tg["process_sizes"]:
        values.append(statistics.fmean(tg["samples"][at:at + size]))
        at += size
    return values


def test_a_planted_5_to_10_percent_tg_slowdown_is_called_slower_within_30_processes_a_side(small_store):
    records = _records(small_store)
    base, small = records["base"], records["small"]
    assert base["status"] == small["status"] == "ok"
    (stood,) = small["repetitions"]["sequential"]["baselines"].values()
    tg = stood["tg_tps"]
    a, b = _process_tg(base), _process_tg(small)
    cv = {name: 100 * statistics.stdev(v) / statistics.fmean(v) for name, v in (("base", a), ("small", b))}
    print(f"\nplanted small: tg {tg['verdict']} after {tg['pairs']} pairs ({small['repetitions']['processes']} "
          f"processes a side, -r {small['repetitions']['calibration']['chosen']} each), ratio {tg['ratio']:.3f} "
          f"[{tg['ci_low']:.3f}, {tg['ci_high']:.3f}], process CV base {cv['base']:.1f}% small {cv['small']:.1f}%, "
          f"disturbed processes {base['hygiene']['disturbed']} + {small['hygiene']['disturbed']}")
    assert tg["verdict"] == "slower", (tg, cv, "disturbed", base["hygiene"]["disturbed"], small["hygiene"]["disturbed"])
    assert small["repetitions"]["processes"] == base["repetitions"]["processes"] <= MAX_PROCESSES
    assert tg["ratio"] > 0.85                     # small: 5-10% when it was tuned


def test_the_compare_command_calls_the_small_slowdown_slower_on_tg(small_store):
    result = hwmatrix("compare", "--baseline", "ref=base", "--candidate", "ref=small", "--store", small_store.as_uri())
    assert result.returncode == 0, result.stderr
    verdicts = {}
    for line in result.stdout.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) > 7 and cells[2] == "tg_tps":
            verdicts[cells[2]] = cells[7].strip("*")
    assert verdicts == {"tg_tps": "slower"}, result.stdout
