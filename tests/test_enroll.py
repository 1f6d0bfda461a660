"""`hwmatrix cluster up` / `agent join` / `agents` as a user runs them: a real Ray head with
token auth, this machine joined as an agent with its profile as labels, listed by class."""
from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, hwmatrix, wait_for
from tests.test_loopback import ip_of, traced, traced_addresses


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "coordinator.cli", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, **env},
                            start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    """`--block` Ray processes stop everything they started on SIGTERM."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def head(tmp_path):
    port, token = _free_port(), tmp_path / "cfg" / "ray-token"
    env = {"RAY_USAGE_STATS_ENABLED": "0", "HWMATRIX_SPOOL": str(tmp_path / "spool")}
    proc = _start("cluster", "up", "--bind", "127.0.0.1", "--port", str(port), "--token-file", str(token),
                  "--block", env=env)
    banner = ""                     # Ray's own start-up lines, then ours once the head takes connections
    while "hwmatrix agent join" not in banner and (line := proc.stdout.readline()):
        banner += line
    yield {"proc": proc, "address": f"127.0.0.1:{port}", "token": token, "env": env, "banner": banner}
    _stop(proc)


def test_cluster_up_makes_a_private_token_and_prints_the_join_command(head):
    assert oct(head["token"].stat().st_mode & 0o777) == "0o600"
    assert len(head["token"].read_text().strip()) == 64
    assert f"hwmatrix agent join --address {head['address']} --token-file {head['token']}" in head["banner"]
    assert head["token"].read_text().strip() not in head["banner"]


def nameservers() -> set[str]:
    with open("/etc/resolv.conf") as handle:
        return {words[1] for line in handle if (words := line.split())[:1] == ["nameserver"] and len(words) > 1}


@pytest.mark.timeout(300)
def test_cluster_up_asks_no_cloud_metadata_endpoint_and_looks_up_no_name(tmp_path):
    """`ray start --head` with the dashboard off still ran Ray's dashboard process, which asked
    169.254.169.254 and looked up metadata.google.internal (and usage-stats.ray.io, to say
    usage stats are off). Every connect() of the head and its processes, traced."""
    port, trace = _free_port(), tmp_path / "head.trace"
    proc = subprocess.Popen(traced([sys.executable, "-m", "coordinator.cli", "cluster", "up", "--bind", "127.0.0.1",
                                    "--port", str(port), "--token-file", str(tmp_path / "token"), "--block"], trace),
                            cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    try:
        printed = ""
        while "Ray runtime started" not in printed and (line := proc.stdout.readline()):
            printed += line
        assert "Ray runtime started" in printed, printed[-3000:]
        time.sleep(5)                               # the dashboard asked within 0.1 s of its start
    finally:
        _stop(proc)
    used = traced_addresses(trace.read_text())
    assert "127.0.0.1" in used, "the trace has none of the head's own connections: nothing was checked"
    assert not [ip for ip in used if ip_of(ip).is_link_local], sorted(used)
    assert not used & nameservers(), sorted(used)


def test_an_agent_joins_with_the_token_and_is_listed_idle_under_its_class(head):
    from agent.machine.probe import probe

    agent = _start("agent", "join", "--address", head["address"], "--token-file", str(head["token"]), "--block",
                   env=head["env"])
    try:
        listing = wait_for(lambda: (r := hwmatrix("agents", "--address", head["address"], "--token-file",
                                                  str(head["token"]))).returncode == 0
                            and "idle" in r.stdout and r.stdout, seconds=180)
        if not listing:
            _stop(agent)
            pytest.fail(f"the agent never showed up; it printed:\n{agent.stdout.read()[-3000:]}")
        assert f"class {probe().hardware_class}" in listing and probe().hostname in listing
    finally:
        _stop(agent)


def test_an_agent_with_a_wrong_token_is_refused_with_a_clear_message(head, tmp_path):
    bad = tmp_path / "bad-token"
    bad.write_text(secrets.token_hex(32))
    join = hwmatrix("agent", "join", "--address", head["address"], "--token-file", str(bad),
                    env={"RAY_AUTH_MODE": "", "RAY_AUTH_TOKEN_PATH": ""})
    assert join.returncode == 2
    assert "refused this agent's token" in join.stderr and "Traceback" not in join.stderr


def test_joining_without_a_token_file_says_where_to_get_one(head, tmp_path):
    result = hwmatrix("agent", "join", "--address", head["address"], "--token-file", str(tmp_path / "none"))
    assert result.returncode == 2
    assert "no Ray auth token" in result.stderr and "Traceback" not in result.stderr


def test_an_address_where_no_head_listens_is_one_clear_line_for_agents_and_join(tmp_path):
    token = tmp_path / "token"
    token.write_text("ab" * 32)
    closed = f"127.0.0.1:{_free_port()}"
    for args in (("agents", "--address", closed), ("agent", "join", "--address", closed)):
        result = hwmatrix(*args, "--token-file", str(token), timeout=60)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            f"hwmatrix: no Ray head answers at {closed} (Connection refused): is `hwmatrix cluster up` "
            "running there, and the port open?"]
