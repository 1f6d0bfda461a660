"""The bubblewrap sandbox for untrusted code, on the real bwrap: no network, no capabilities,
nothing writable or readable beyond what a step needs, deadlines still kill, and a machine
without bubblewrap refuses to run anything instead of running it bare."""
from __future__ import annotations

import json
import os
import socket
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agent.engine import sandbox
from agent.paths import cache_dir
from agent.engine.runner import run_process

PYTHON = "/usr/bin/python3"     # a system interpreter: the test's own may live under $HOME
REAL_HOME = Path.home()          # the owner's real home (tests below point HOME elsewhere)

PROBE = textwrap.dedent("""
    import json, socket, sys
    port, outside, home_file, secret, work, real_home_file = sys.argv[1:7]
    seen = {}
    with open("/proc/self/status") as handle:
        seen["cap_eff"] = next(l.split()[1] for l in handle if l.startswith("CapEff:"))
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect(("127.0.0.1", int(port)))
        seen["connect"] = True
    except OSError as exc:
        seen["connect"] = str(exc)
    for name, path in (("outside", outside), ("home", home_file), ("work", work), ("real_home", real_home_file)):
        try:
            with open(path, "w") as handle:
                handle.write("x")
            seen["write_" + name] = True
        except OSError as exc:
            seen["write_" + name] = str(exc)
    try:
        with open(secret) as handle:
            seen["secret"] = handle.read()
    except OSError as exc:
        seen["secret"] = str(exc)
    print(json.dumps(seen))
""")


@pytest.fixture
def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server.getsockname()[1]
    server.close()


@pytest.fixture
def fake_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    (home / "secret.txt").write_text("the owner's secret")
    monkeypatch.setenv("HOME", str(home))
    return home


def _probe(tmp_path, port, home, confined: bool) -> dict:
    work = tmp_path / ("work-in" if confined else "work-out")
    work.mkdir()
    outside = tmp_path / f"outside-{confined}.txt"
    home_file = home / f"written-{confined}.txt"
    real_home_file = REAL_HOME / f".hwmatrix-sandbox-test-{os.getpid()}-{confined}"
    argv = [PYTHON, "-c", PROBE, str(port), str(outside), str(home_file), str(home / "secret.txt"),
            str(work / "ok.txt"), str(real_home_file)]
    if confined:
        with sandbox.confined():
            result = run_process(argv, 60, tmp_path / "o", tmp_path / "e", cwd=work)
    else:
        result = run_process(argv, 60, tmp_path / "o", tmp_path / "e", cwd=work)
    assert result.exit_code == 0, result.stderr()
    seen = json.loads(result.stdout())
    seen["real_home_exists"] = real_home_file.exists()
    real_home_file.unlink(missing_ok=True)
    seen["outside_exists"], seen["home_exists"] = outside.exists(), home_file.exists()
    seen["work_exists"] = (work / "ok.txt").exists()
    return seen


def test_outside_the_sandbox_the_probe_can_do_everything(tmp_path, listener, fake_home):
    """The control: the same probe, unconfined, connects, writes and reads (so the next test can fail)."""
    seen = _probe(tmp_path, listener, fake_home, confined=False)
    assert seen["connect"] is True
    assert seen["write_outside"] is True and seen["outside_exists"]
    assert seen["write_home"] is True and seen["home_exists"]
    assert seen["write_real_home"] is True and seen["real_home_exists"]
    assert seen["secret"] == "the owner's secret"
    if os.geteuid() == 0:
        assert int(seen["cap_eff"], 16) != 0


def test_inside_the_sandbox_no_network_no_capabilities_no_home_and_only_the_work_dir(tmp_path, listener, fake_home):
    seen = _probe(tmp_path, listener, fake_home, confined=True)
    assert seen["connect"] is not True
    assert int(seen["cap_eff"], 16) == 0
    # tmp_path is under /tmp, a private tmpfs inside: a write may "succeed" there, never outside
    assert not seen["outside_exists"] and not seen["home_exists"]
    assert seen["write_real_home"] is not True and not seen["real_home_exists"]
    assert seen["secret"] != "the owner's secret"
    assert seen["write_work"] is True and seen["work_exists"]


def test_wrap_binds_writable_and_readable_dirs_at_their_own_paths(tmp_path):
    """A dir under $HOME is bound at its absolute path when asked for, the system is
    read-only, /root and /home are absent."""
    src = cache_dir("sandbox-test")        # under ~/.cache/hwmatrix by default
    (src / "in.txt").write_text("hello")
    work = tmp_path / "w"
    work.mkdir()
    script = textwrap.dedent(f"""
        import os
        print(open({str(src / 'in.txt')!r}).read())
        open({str(work / 'out.txt')!r}, "w").write("done")
        for path in ({str(src / 'no.txt')!r}, "/usr/no.txt", "/etc/no.txt", "/no.txt"):
            try:
                open(path, "w")
                print("WROTE", path)
            except OSError:
                pass
        print(os.path.exists("/etc/shadow"), os.path.exists("/home"), os.getcwd())
        home = {str(Path.home())!r}     # the owner's, not the sandbox's HOME
        print(sorted(os.listdir(home)) if os.path.isdir(home) else "no home")
    """)
    argv = sandbox.wrap([PYTHON, "-c", script], [work], [src], cwd=work)
    import subprocess
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "hello" and (work / "out.txt").read_text() == "done"
    assert not any(line.startswith("WROTE") for line in lines), lines
    assert lines[1] == f"False False {work}"
    # only the path to the bound cache dir exists in the home, nothing else of it
    assert lines[2] in ("no home", "['.cache']"), lines[2]


def test_a_sandboxed_process_that_overruns_its_deadline_is_killed(tmp_path):
    work = tmp_path / "w"
    work.mkdir()
    script = "sleep 60 & echo started > started; sleep 60"
    with sandbox.confined():
        started = time.monotonic()
        result = run_process(["/bin/sh", "-c", script], 1.5, tmp_path / "o", tmp_path / "e", cwd=work)
    assert result.timed_out and result.exit_code is None
    assert time.monotonic() - started < 10
    assert (work / "started").exists()
    time.sleep(0.3)
    leftovers = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline(p) == "sleep\x0060"]
    assert leftovers == []


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().decode(errors="replace").rstrip("\x00")
    except OSError:
        return ""


def test_without_bubblewrap_confined_refuses_and_nothing_runs_bare(tmp_path, monkeypatch):
    monkeypatch.setenv("HWMATRIX_BWRAP", "/nonexistent/bwrap")
    assert "bubblewrap" in (sandbox.problem() or "")
    marker = tmp_path / "ran"
    with pytest.raises(sandbox.SandboxUnavailable, match="bubblewrap"):
        with sandbox.confined():
            run_process(["/bin/sh", "-c", f"touch {marker}"], 10, tmp_path / "o", tmp_path / "e")
    assert not marker.exists() and not sandbox.active()


def test_bwrap_vanishing_mid_run_is_a_failed_process_not_a_bare_run(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    with sandbox.confined():
        monkeypatch.setenv("HWMATRIX_BWRAP", "/nonexistent/bwrap")
        result = run_process(["/bin/sh", "-c", f"touch {marker}"], 10, tmp_path / "o", tmp_path / "e", cwd=tmp_path)
    assert result.exit_code == 127 and not result.timed_out
    assert "bubblewrap" in result.stderr() and not marker.exists()


@pytest.mark.engines
def test_a_real_build_quantize_and_cell_run_confined(tmp_path, monkeypatch):
    """llama.cpp v0.3.36 from the registry sdist, built, quantized and measured in the sandbox,
    in the sandboxed build root (never the trusted one)."""
    from agent.spec.cellspec import CellSpec, EngineSpec, Hygiene, ModelSpec, RefSpec, Repetitions
    from agent.engine.pipeline import run_cell
    from agent.store.backends import open_store

    monkeypatch.setenv("HWMATRIX_SPOOL", str(tmp_path / "spool"))
    store_url = (tmp_path / "store").as_uri()
    spec = CellSpec(
        run_id="sandboxed", matrix_name="sandboxed", matrix_hash="0" * 12, cell_id="m36-q8",
        params={"ref": "B"},
        engine=EngineSpec(name="mainline", kind="llama.cpp",
                          sdist={"package": "llama-cpp-python", "versions": ["0.3.35", "0.3.36"]}),
        ref=RefSpec(name="B", kind="tag", value="v0.3.36"),
        model=ModelSpec(name="tiny", generate="tiny-llama"), quant="Q8_0",
        args={"n_prompt": 16, "n_gen": 4, "threads": 1},
        repetitions=Repetitions(min=2, max=2, min_process_s=0), hygiene=Hygiene(drop_caches="off"),
        timeout_s=300, store_url=store_url,
    )
    started = time.monotonic()
    with sandbox.confined():
        record = run_cell(spec)
    print(f"confined cell (build {record.engine.get('build', {})}) took {time.monotonic() - started:.1f} s",
          file=sys.stderr)
    assert record.status == "ok", record.error
    for name in ("pp_tps", "tg_tps"):
        assert record.metrics[name].n == 2 and all(s > 0 for s in record.metrics[name].samples)
    digest = record.engine["build"]["digest"]
    sandboxed_root = cache_dir("sandboxed", "builds") / digest
    assert (sandboxed_root / "build.json").is_file()
    binaries = json.loads((sandboxed_root / "build.json").read_text())["binaries"]
    assert all(Path(p).is_relative_to(sandboxed_root) for p in binaries.values())
    assert Path(record.model["path"]).is_relative_to(cache_dir("sandboxed", "models"))
    stored = open_store(store_url).get_json(f"runs/sandboxed/results/m36-q8/{record.agent_id}.json")
    assert stored["status"] == "ok"


# ------------------------------------------------ the environment and ccache of untrusted code

# The whole environment a sandboxed step may see (README, "Sandbox."): anything else leaked.
# (PWD is bwrap's own: the dir it changed to.)
ALLOWED_ENV = {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "PWD", "CCACHE_DIR", "CCACHE_BASEDIR",
               "CCACHE_REMOTE_STORAGE", "CCACHE_MAXSIZE", "CUDACXX", "CUDA_VISIBLE_DEVICES", "LD_LIBRARY_PATH"}

# A pull request's CMake code that publishes what it can: the secret and the whole environment
# into build.log and files of the build, at configure and build time; it also plants a file in
# the ccache it was given and lists what other builds planted there.
HOSTILE_CMAKE = textwrap.dedent("""\
    cmake_minimum_required(VERSION 3.10)
    message(STATUS "secret seen: [$ENV{HWMATRIX_TEST_SECRET}]")
    execute_process(COMMAND env OUTPUT_VARIABLE seen)
    message(STATUS "environment at configure:\\n${seen}")
    file(WRITE "${CMAKE_BINARY_DIR}/configure-env.txt" "${seen}")
    project(hostile C)
    file(READ "${CMAKE_SOURCE_DIR}/tag.txt" tag)
    string(STRIP "${tag}" tag)
    file(WRITE "$ENV{CCACHE_DIR}/planted-by-${tag}" "an object for someone else")
    file(GLOB planted RELATIVE "$ENV{CCACHE_DIR}" "$ENV{CCACHE_DIR}/planted-by-*")
    message(STATUS "ccache dir [$ENV{CCACHE_DIR}] planted [${planted}]")
    set(CMAKE_C_COMPILER_LAUNCHER ccache)
    file(WRITE "${CMAKE_BINARY_DIR}/dump-env.sh" "env > build-env.txt; env")
    add_custom_target(dump-env COMMAND sh dump-env.sh WORKING_DIRECTORY "${CMAKE_BINARY_DIR}")
    add_executable(hostile-tool main.c)
    add_dependencies(hostile-tool dump-env)
    set_target_properties(hostile-tool PROPERTIES RUNTIME_OUTPUT_DIRECTORY "${CMAKE_BINARY_DIR}/bin")
""")


@pytest.fixture
def agent_secrets(tmp_path, monkeypatch):
    """The donor's secrets in the agent's environment, a private cache, and a PATH entry of
    the owner's that must not be searched inside."""
    secret = f"s3cret-{os.getpid()}-{time.time_ns()}"
    monkeypatch.setenv("HWMATRIX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HWMATRIX_TEST_SECRET", secret)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("PATH", f"{tmp_path / 'owners-bin'}:{os.environ['PATH']}")
    return secret


def _hostile_repo(tmp_path: Path) -> tuple[Path, list[str]]:
    """A local git repo with two commits of the hostile project (tags "one" and "two")."""
    from agent.engine.gitutil import git
    repo = tmp_path / "hostile"
    repo.mkdir()
    git("init", "--quiet", str(repo))
    (repo / "CMakeLists.txt").write_text(HOSTILE_CMAKE)
    (repo / "main.c").write_text("int main(void) { return 0; }\n")
    commits = []
    for tag in ("one", "two"):
        (repo / "tag.txt").write_text(tag + "\n")
        git("add", "-A", cwd=repo)
        git("commit", "--quiet", "-m", tag, cwd=repo)
        commits.append(git("rev-parse", "HEAD", cwd=repo))
    return repo, commits


def _confined_build(repo: Path, commit: str):
    from agent.engine.build import build
    from agent.engine.sources import resolve
    with sandbox.confined():
        resolved = resolve({"repo": str(repo)}, "commit", commit)
        return build(resolved, ["-DGGML_NATIVE=OFF"], ["hostile-tool"], jobs=2, timeout_s=120)


def _env_names(text: str) -> set[str]:
    return {line.split("=", 1)[0] for line in text.splitlines() if "=" in line and not line.startswith(" ")}


@pytest.mark.timeout(180)
def test_a_sandboxed_build_cannot_see_the_agents_secret_variables(tmp_path, agent_secrets):
    """The real build path (configure and build) of hostile CMake code: neither build.log nor
    any file the build wrote holds the secret, and the environment inside is the allowlist."""
    repo, commits = _hostile_repo(tmp_path)
    built = _confined_build(repo, commits[0])
    log = built.log_path.read_text()
    assert "secret seen: []" in log and "environment at configure:" in log, log[-3000:]
    root = built.log_path.parent
    written = [p for p in root.rglob("*") if p.is_file()] + [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    leaked = [str(p) for p in written if agent_secrets.encode() in p.read_bytes()]
    assert leaked == []
    for name in ("configure-env.txt", "build-env.txt"):
        seen = (built.build_dir / name).read_text()
        assert {"PATH", "HOME", "CCACHE_DIR"} <= _env_names(seen), seen
        names = _env_names(seen) - {"MAKEFLAGS", "MAKELEVEL", "MFLAGS"}     # make's own, at build time
        assert names <= ALLOWED_ENV, sorted(names - ALLOWED_ENV)
        env = dict(line.split("=", 1) for line in seen.splitlines() if "=" in line)
        assert env["HOME"] == "/tmp" and str(tmp_path / "owners-bin") not in env["PATH"]
    assert Path(built.bin("hostile-tool")).is_file()       # the build itself still works


def _dumped_env(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_a_sandboxed_quantize_sees_only_the_allowlisted_environment(tmp_path, agent_secrets):
    """A hostile llama-quantize (it dumps its environment into its output) run by the real
    quantize path: only the allowlist reaches it."""
    from agent.spec.cellspec import ModelSpec
    from agent.engine.models import model_file
    quantize = tmp_path / "bin" / "llama-quantize"
    quantize.parent.mkdir()
    quantize.write_text('#!/bin/sh\nenv > "$2"\n')
    quantize.chmod(0o755)
    source = tmp_path / "model.gguf"
    source.write_bytes(b"GGUF" + bytes(64))
    with sandbox.confined():
        made = model_file(ModelSpec(name="m", path=str(source)), "Q8_0", quantize, "f" * 64)
    env = _dumped_env(made.path.read_text())
    assert "PATH" in env and agent_secrets not in made.path.read_text()
    assert set(env) <= ALLOWED_ENV, sorted(set(env) - ALLOWED_ENV)
    assert env["HOME"] == "/tmp" and str(tmp_path / "owners-bin") not in env["PATH"]


def test_a_sandboxed_engine_sees_only_the_allowlist_even_when_handed_the_whole_environment(tmp_path, agent_secrets):
    from agent.engine.runner import engine_env
    work = tmp_path / "w"
    work.mkdir()
    given = {"whole environment": {**os.environ, "CUDA_VISIBLE_DEVICES": "0"},
             "engine_env": engine_env({"CUDA_VISIBLE_DEVICES": "0"}), "default": None}
    for what, env in given.items():
        with sandbox.confined():
            result = run_process(["/usr/bin/env"], 30, tmp_path / "o", tmp_path / "e", env=env, cwd=work)
        assert result.exit_code == 0, result.stderr()
        seen = _dumped_env(result.stdout())
        assert "PATH" in seen and agent_secrets not in result.stdout(), what
        assert set(seen) <= ALLOWED_ENV, (what, sorted(set(seen) - ALLOWED_ENV))
        assert seen["HOME"] == "/tmp", what
        if env is not None:
            assert seen["CUDA_VISIBLE_DEVICES"] == "0", what     # the GPUs the pipeline chose still pass


@pytest.mark.timeout(240)
def test_one_untrusted_builds_ccache_writes_are_not_seen_by_another_sources_build(tmp_path, agent_secrets):
    """Two commits of the hostile project, built in the sandbox one after the other: each gets
    its own ccache dir, and the second cannot see what the first planted in its ccache."""
    repo, commits = _hostile_repo(tmp_path)
    first, second = (_confined_build(repo, commit).log_path.read_text() for commit in commits)
    assert "planted [planted-by-one]" in first, first[-2000:]
    assert "planted [planted-by-two]" in second, second[-2000:]      # not "planted-by-one;planted-by-two"
    dirs = {log.split("ccache dir [", 1)[1].split("]", 1)[0] for log in (first, second)}
    assert len(dirs) == 2


def test_the_untrusted_ccache_dir_is_keyed_by_repo_commit_and_isa(tmp_path, monkeypatch):
    from agent.engine.build import sandboxed_ccache_dir
    from agent.engine.sources import ResolvedSource
    monkeypatch.setenv("HWMATRIX_CACHE", str(tmp_path / "cache"))
    a = ResolvedSource("file:///r/a", tmp_path / "m", "1" * 40)
    dirs = [sandboxed_ccache_dir(s, isa) for s, isa in (
        (a, "portable"), (ResolvedSource("file:///r/b", tmp_path / "m", "1" * 40), "portable"),
        (ResolvedSource("file:///r/a", tmp_path / "m", "2" * 40), "portable"), (a, "0123456789abcdef"))]
    assert len(set(dirs)) == 4
    assert sandboxed_ccache_dir(a, "portable") == dirs[0]        # the same source reuses its own
    trusted = cache_dir("ccache", "portable")
    assert all(d.is_relative_to(cache_dir("sandboxed", "ccache")) and d != trusted for d in dirs)


def test_old_untrusted_ccache_dirs_are_pruned_like_builds(tmp_path):
    from agent.engine.cache_prune import prune
    root = tmp_path / "cache"
    old = root / "sandboxed" / "ccache" / "portable-0123456789abcdef"
    (old / "a").mkdir(parents=True)
    (old / "a" / "obj").write_bytes(bytes(4000))
    long_ago = time.time() - 10 * 86400
    for path in (old / "a" / "obj", old / "a", old):
        os.utime(path, (long_ago, long_ago))
    assert prune(root, 1000) == [old] and not old.exists()
