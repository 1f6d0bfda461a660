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

from agent import sandbox
from agent.paths import cache_dir
from agent.runner import run_process

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
        home = os.path.expanduser("~")
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
    from agent.cellspec import CellSpec, EngineSpec, Hygiene, ModelSpec, RefSpec, Repetitions
    from agent.pipeline import run_cell
    from agent.store import open_store

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
        repetitions=Repetitions(min=2, max=2), hygiene=Hygiene(drop_caches="off"),
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
