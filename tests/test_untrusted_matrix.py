"""A matrix (and the spec an agent is handed) is untrusted input.

Through the real CLI, `plan` and `run` refuse every forbidden thing with exit 2 and one
line naming file, line and key, before anything runs (no build, no Ray, no store write,
no marker file a shell would have made). On its own, an agent's CellSpec refuses the same
things, because a volunteer trusts no coordinator.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.spec.cellspec import CellSpec
from tests.conftest import REPO, hwmatrix

BASE = """\
name: untrusted
engines:
  mainline:
    kind: llama.cpp
    repo: https://github.com/ggml-org/llama.cpp
    build:
      cmake:
        - -DGGML_NATIVE=ON
models:
  tiny:
    path: /models/tiny.gguf
args:
  threads: 2
matrix:
  ref:
    - name: a
      tag: v0.3.35
  quant:
    - Q8_0
"""

CMAKE, REPO_LINE, PATH, TAG = "- -DGGML_NATIVE=ON", "repo: https://github.com/ggml-org/llama.cpp", \
    "path: /models/tiny.gguf", "tag: v0.3.35"

# (what the base says, what an attacker writes instead ({pwned}: the marker a shell would
# create), the key the error must name, a fragment of its message)
ATTACKS = [
    pytest.param(CMAKE, "- -DCMAKE_C_COMPILER_LAUNCHER=/tmp/evil.sh", "engines.mainline.build.cmake[0]",
                 "CMAKE_C_COMPILER_LAUNCHER is not allowed", id="cmake-compiler-launcher"),
    pytest.param(CMAKE, "- -DCMAKE_TOOLCHAIN_FILE=/tmp/x.cmake", "engines.mainline.build.cmake[0]",
                 "CMAKE_TOOLCHAIN_FILE is not allowed", id="cmake-toolchain-file"),
    pytest.param(CMAKE, "- -C /tmp/evil.cmake", "engines.mainline.build.cmake[0]",
                 "expected -D<NAME>=<VALUE>", id="cmake-preload-script"),
    pytest.param(CMAKE, "- -C/tmp/x", "engines.mainline.build.cmake[0]",
                 "expected -D<NAME>=<VALUE>", id="cmake-preload-script-joined"),
    pytest.param(CMAKE, "- -DGGML_NATIVE=$(touch {pwned})", "engines.mainline.build.cmake[0]",
                 "the value may only hold", id="cmake-command-substitution"),
    pytest.param(CMAKE, "- -DGGML_NATIVE=OFF;-DCMAKE_C_COMPILER_LAUNCHER=ccache", "engines.mainline.build.cmake[0]",
                 "may not start with '-'", id="cmake-list-smuggles-a-flag"),
    pytest.param(CMAKE, "- -DGGML_NATIVE=OFF;-DCMAKE_C_COMPILER_LAUNCHER=/tmp/evil.sh",
                 "engines.mainline.build.cmake[0]", "bad cmake flag", id="cmake-list-smuggles-a-launcher-path"),
    pytest.param(PATH, "path: ../../etc/passwd", "models.tiny.path", "has a '..' component", id="model-path-up"),
    pytest.param(PATH, "path: models/../../x.gguf", "models.tiny.path", "has a '..' component",
                 id="model-path-up-inside"),
    pytest.param(PATH, "path: -rf.gguf", "models.tiny.path", "starts with '-'", id="model-path-option"),
    pytest.param(TAG, "tag: '--upload-pack=touch {pwned}'", "matrix.ref[0].tag", "starts with '-'",
                 id="ref-upload-pack"),
    pytest.param(TAG, "tag: v1..v2", "matrix.ref[0].tag", "contains '..'", id="ref-range"),
    pytest.param(REPO_LINE, "repo: 'ext::sh -c touch%20{pwned}'", "engines.mainline.repo",
                 "transport syntax", id="repo-ext-transport"),
    pytest.param(REPO_LINE, "repo: '-oProxyCommand=touch {pwned}'", "engines.mainline.repo",
                 "starts with '-'", id="repo-ssh-option"),
    pytest.param(REPO_LINE, "repo: 'ssh://-oProxyCommand=touch%20{pwned}/x'", "engines.mainline.repo",
                 "git would hand ssh a host or user that starts with '-'", id="repo-ssh-url-host-option"),
    pytest.param(REPO_LINE, "repo: 'git@-oProxyCommand:x'", "engines.mainline.repo",
                 "git would hand ssh a host or path that starts with '-'", id="repo-scp-host-option"),
    pytest.param(REPO_LINE, "repo: https://someone:s3cr3t-t0ken@github.com/ggml-org/llama.cpp",
                 "engines.mainline.repo", "git config credential.helper", id="repo-user-and-password"),
    pytest.param(REPO_LINE, "repo: https://s3cr3t-t0ken@github.com/ggml-org/llama.cpp", "engines.mainline.repo",
                 "git config credential.helper", id="repo-token-as-user"),
    pytest.param(REPO_LINE, "repo: ssh://git:s3cr3t-t0ken@github.com/ggml-org/llama.cpp", "engines.mainline.repo",
                 "git config credential.helper", id="repo-ssh-password"),
    pytest.param(CMAKE, "- -DGGML_VULKAN_SHADERS_GEN_TOOLCHAIN=x.cmake", "engines.mainline.build.cmake[0]",
                 "names a file, a directory or a toolchain", id="cmake-ggml-toolchain-file"),
    pytest.param(CMAKE, "- -DGGML_BACKEND_DIR=lib", "engines.mainline.build.cmake[0]",
                 "names a file, a directory or a toolchain", id="cmake-ggml-backend-dir"),
    pytest.param(CMAKE, "- -DGGML_NO_SUCH_THING=ON", "engines.mainline.build.cmake[0]",
                 "is not a cmake option of llama.cpp", id="cmake-ggml-name-that-does-not-exist"),
    pytest.param(CMAKE, "- -DGGML_CUDAA=ON", "engines.mainline.build.cmake[0]", "did you mean GGML_CUDA?",
                 id="cmake-ggml-typo"),
    pytest.param(CMAKE, "- -DGGML_IQK_FA_ALL_QUANTS=OFF", "engines.mainline.build.cmake[0]",
                 "an option of the other engine, not of llama.cpp", id="cmake-ik-option-on-mainline"),
    pytest.param("threads: 2", "threads: 100000", "args.threads", "less than or equal to 4096",
                 id="threads-out-of-bounds"),
    pytest.param("threads: 2", "ot: " + "x" * 5000, "args.ot", "at most 2000 characters", id="ot-too-long"),
    pytest.param("threads: 2", "extra_args: [--rpc, 'evil:1']", "args.extra_args", "unknown arg 'extra_args'",
                 id="unknown-arg-key"),
    pytest.param("- Q8_0", "- 'Q4_0; rm -rf /'", "matrix.quant[0]", "is not a known quant type",
                 id="quant-with-shell"),
    pytest.param("name: untrusted", "name: a/b", "name", "is not a valid name", id="matrix-name-slash"),
    pytest.param("name: untrusted", "name: '..'", "name", "'.' and '..' name directories", id="matrix-name-dotdot"),
    pytest.param("  tiny:\n", "  '..':\n", "models", "'.' and '..' name directories", id="model-name-dotdot"),
    pytest.param("  mainline:\n", "  a/b:\n", "engines", "is not a valid name", id="engine-name-slash"),
]


def _attack(tmp_path: Path, old: str, new: str) -> tuple[Path, int, Path]:
    """The base matrix with one change; (file, line of the change, marker a shell would touch)."""
    pwned = tmp_path / "pwned"
    new = new.replace("{pwned}", str(pwned))
    assert BASE.count(old) == 1
    text = BASE.replace(old, new)
    line = text[:text.index(new)].count("\n") + 1
    path = tmp_path / "attack.yaml"
    path.write_text(text)
    return path, line, pwned


def _assert_refused(result, path: Path, line: int, key: str, fragment: str) -> None:
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "Traceback" not in out
    assert re.search(re.escape(f"{path}:{line}: {key}") + r"\S*: ", result.stderr), result.stderr
    assert fragment in result.stderr, result.stderr


def test_the_base_matrix_plans_so_each_refusal_below_is_its_one_change(tmp_path):
    path = tmp_path / "base.yaml"
    path.write_text(BASE)
    result = hwmatrix("plan", str(path))
    assert result.returncode == 0, result.stderr


def _run(tmp_path: Path, path: Path):
    return hwmatrix("run", str(path), "--store", (tmp_path / "store").as_uri(),
                    env={"HWMATRIX_CACHE": str(tmp_path / "cache"), "HWMATRIX_SPOOL": str(tmp_path / "spool"),
                         "RAY_TMPDIR": str(tmp_path / "ray"), "RAY_ADDRESS": ""})


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory) -> dict:
    """Every attack through `plan` and `run`, four CLI processes at a time (each one is
    mostly interpreter start-up); test id -> (dir, file, line, plan result, run result)."""
    from concurrent.futures import ThreadPoolExecutor

    cases = {}
    for param in ATTACKS:
        tmp = tmp_path_factory.mktemp(param.id)
        old, new, *_ = param.values
        cases[param.id] = (tmp, *_attack(tmp, old, new))
    with ThreadPoolExecutor(4) as pool:
        plans = {i: pool.submit(hwmatrix, "plan", str(c[1])) for i, c in cases.items()}
        runs = {i: pool.submit(_run, c[0], c[1]) for i, c in cases.items()}
        return {i: (*c, plans[i].result(), runs[i].result()) for i, c in cases.items()}


@pytest.mark.parametrize("old, new, key, fragment", ATTACKS)
def test_plan_refuses_the_attack_with_exit_2_naming_file_line_and_key(cli_results, request, old, new, key, fragment):
    _, path, line, pwned, plan, _ = cli_results[request.node.callspec.id]
    _assert_refused(plan, path, line, key, fragment)
    assert not pwned.exists()


@pytest.mark.parametrize("old, new, key, fragment", ATTACKS)
def test_run_refuses_the_attack_before_building_starting_ray_or_writing_the_store(cli_results, request, old, new,
                                                                                   key, fragment):
    tmp, path, line, pwned, _, run = cli_results[request.node.callspec.id]
    _assert_refused(run, path, line, key, fragment)
    assert not (tmp / "cache" / "builds").exists() and not (tmp / "cache" / "repos").exists()
    assert not (tmp / "store" / "runs").exists()
    assert not (tmp / "ray").exists()
    assert not pwned.exists()


# ---------------------------------------------------------------- the agent on its own

@pytest.fixture(scope="module")
def real_spec() -> dict:
    """A spec exactly as the coordinator hands it out, for the base matrix."""
    import tempfile

    from coordinator.planning.plan import load_plan

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "base.yaml"
        path.write_text(BASE)
        plan = load_plan(str(path))
    spec = plan.cells[0].to_spec(plan.default_run_id, "file:///tmp/store")
    return json.loads(spec.model_dump_json())


def _with(spec: dict, dotted: str, value) -> str:
    """The spec as JSON with ``dotted`` (e.g. 'engine.cmake') set to ``value``."""
    spec = json.loads(json.dumps(spec))
    *parents, last = dotted.split(".")
    cur = spec
    for p in parents:
        cur = cur[p]
    cur[last] = value
    return json.dumps(spec)


AGENT_ATTACKS = [
    ("engine.cmake", ["-DCMAKE_C_COMPILER_LAUNCHER=/tmp/evil.sh"]),
    ("engine.cmake", ["-DCMAKE_TOOLCHAIN_FILE=/tmp/x.cmake"]),
    ("engine.cmake", ["-C", "/tmp/evil.cmake"]),
    ("engine.cmake", ["-C/tmp/x"]),
    ("engine.cmake", ["-DGGML_NATIVE=$(touch /tmp/pwned)"]),
    ("engine.cmake", ["-DGGML_NATIVE=OFF;-DCMAKE_C_COMPILER_LAUNCHER=ccache"]),
    ("model.path", "../../etc/passwd"),
    ("model.path", "models/../../x.gguf"),
    ("model.path", "-rf"),
    ("model.path", "m.gguf\n--rpc"),
    ("model.name", "a/b"),
    ("model.params", {"n_vocab": 10 ** 9}),
    ("model.sha256", "not-hex; rm -rf /"),
    ("ref.value", "--upload-pack=touch /tmp/pwned"),
    ("ref.value", "v1..v2"),
    ("engine.repo", "ext::sh -c touch%20/tmp/pwned"),
    ("engine.repo", "-oProxyCommand=touch /tmp/pwned"),
    ("engine.repo", "ssh://-oProxyCommand=touch%20/tmp/pwned/x"),
    ("engine.repo", "ssh://%2DoProxyCommand=x/y"),
    ("engine.repo", "https://someone:s3cr3t@github.com/ggml-org/llama.cpp"),
    ("engine.repo", "https://s3cr3t@github.com/ggml-org/llama.cpp"),
    ("engine.cmake", ["-DGGML_VULKAN_SHADERS_GEN_TOOLCHAIN=x.cmake"]),
    ("engine.cmake", ["-DGGML_IQK_FA_ALL_QUANTS=OFF"]),      # the spec's engine is llama.cpp
    ("engine.cmake", ["-DGGML_NO_SUCH_THING=ON"]),
    ("engine.name", ".."),
    ("args.threads", 100000),
    ("args.ot", "x" * 5000),
    ("args.extra_args", ["--rpc", "evil:1"]),
    ("quant", "Q4_0; rm -rf /"),
    ("run_id", "../x"),
    ("run_id", "a/b"),
    ("cell_id", ".."),
    ("matrix_name", "a/b"),
    ("matrix_hash", "$(id)"),
    ("build_targets", ["--target", "-j99999"]),
    ("gpus", 100000),
]


def test_the_real_spec_passes_the_agent_so_each_refusal_below_is_its_one_change(real_spec):
    assert CellSpec.model_validate_json(json.dumps(real_spec)).model.path == "/models/tiny.gguf"


@pytest.mark.parametrize("dotted, value", AGENT_ATTACKS, ids=[f"{d}={str(v)[:40]}" for d, v in AGENT_ATTACKS])
def test_agent_cellspec_refuses_the_attack_with_a_validation_error(real_spec, dotted, value):
    with pytest.raises(ValidationError):
        CellSpec.model_validate_json(_with(real_spec, dotted, value))


@pytest.mark.parametrize("kind, value", [("commit", "HEAD; rm -rf /"), ("commit", "--all"), ("pr", "1 --upload-pack=x"),
                                         ("pr", "-1"), ("branch", "-main"), ("tag", "a b"), ("ref", "refs/../x")])
def test_agent_refuses_a_ref_value_that_does_not_fit_its_kind(real_spec, kind, value):
    spec = _with(real_spec, "ref.kind", kind)
    with pytest.raises(ValidationError):
        CellSpec.model_validate_json(_with(json.loads(spec), "ref.value", value))


def test_agent_refuses_an_sdist_with_a_bad_package_or_version(real_spec):
    sdist_spec = json.loads(_with(real_spec, "engine.repo", None))
    for sdist in ({"package": "../x", "versions": ["0.3.35"]}, {"package": "llama-cpp-python", "versions": ["1; rm"]},
                  {"package": "llama-cpp-python", "versions": ["-1"]}, {"package": "llama-cpp-python", "versions": []}):
        with pytest.raises(ValidationError):
            CellSpec.model_validate_json(_with(sdist_spec, "engine.sdist", sdist))
    good = {"package": "llama-cpp-python", "versions": ["0.3.35"]}
    assert CellSpec.model_validate_json(_with(sdist_spec, "engine.sdist", good)).engine.sdist.package == "llama-cpp-python"


def _matrix_files() -> list[Path]:
    import yaml

    return [p for p in sorted((REPO / "matrices").glob("*.yaml"))
            if isinstance(data := yaml.safe_load(p.read_text()), dict) and "matrix" in data]


@pytest.mark.parametrize("matrix", _matrix_files(), ids=lambda p: p.name)
def test_every_spec_the_coordinator_makes_from_a_real_matrix_passes_the_agent(matrix):
    from coordinator.planning.plan import load_plan

    plan = load_plan(str(matrix))
    for cell in plan.cells:
        spec = cell.to_spec(plan.default_run_id + "-20250101T000000", "file:///tmp/store")
        assert CellSpec.model_validate_json(spec.model_dump_json()) == spec


# ---------------------------------------------------------------- what stays allowed

@pytest.mark.parametrize("repo", ["https://github.com/ggml-org/llama.cpp", "ssh://git@github.com/ggml-org/llama.cpp",
                                  "ssh://git@github.com:22/ggml-org/llama.cpp", "git://example.org/llama.cpp",
                                  "git@github.com:ggml-org/llama.cpp.git", "file:///srv/git/llama.cpp",
                                  "/srv/git/llama.cpp", "../llama.cpp"])
def test_a_repo_url_without_credentials_or_options_is_still_allowed(repo):
    from agent.spec.flags import repo_problem

    assert repo_problem(repo) is None


def test_a_refused_repo_url_points_to_credential_helpers_and_never_repeats_the_secret(tmp_path):
    path, _, _ = _attack(tmp_path, REPO_LINE, "repo: https://someone:s3cr3t-t0ken@github.com/ggml-org/llama.cpp")
    result = hwmatrix("plan", str(path))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "credential.helper" in result.stderr and "github.com/ggml-org/llama.cpp" in result.stderr
    assert "s3cr3t" not in result.stderr and "someone" not in result.stderr


@pytest.mark.parametrize("kind, flag", [("llama.cpp", "-DGGML_CUDA=ON"), ("llama.cpp", "-DGGML_CUDA_FA_ALL_QUANTS=ON"),
                                        ("llama.cpp", "-DGGML_SCHED_MAX_COPIES=1"), ("llama.cpp", "-DLLAMA_CURL=OFF"),
                                        ("ik_llama.cpp", "-DGGML_IQK_FA_ALL_QUANTS=OFF"),
                                        ("ik_llama.cpp", "-DGGML_CUDA_IQK_FORCE_BF16=1"),
                                        ("ik_llama.cpp", "-DGGML_BLAS_VENDOR=OpenBLAS")])
def test_a_cmake_option_the_engine_has_passes_for_that_engine(kind, flag):
    from agent.spec.flags import cmake_flag_problem

    assert cmake_flag_problem(flag, kind) is None


def test_every_cmake_flag_the_build_itself_passes_is_an_option_of_some_engine():
    from agent.engine.build import OFFLINE_FLAGS
    from agent.spec.flags import cmake_flag_problem

    assert OFFLINE_FLAGS and all(cmake_flag_problem(flag) is None for flag in OFFLINE_FLAGS)
