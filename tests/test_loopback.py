"""On one machine hwmatrix's Ray keeps to 127.0.0.1: a local run's embedded Ray listens on and
talks to loopback only, and a driver of a cluster on this machine joins it on loopback (the
test cluster's addresses are checked in test_cluster)."""
from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from coordinator.cluster.loopback import NO_CLUSTER_MODE, keep_ray_on_loopback
from tests.conftest import REPO, two_ref_matrix


@pytest.mark.parametrize("address, no_cluster_mode", [(None, "0"), ("127.0.0.1:6379", "0"), ("localhost:6379", "0"),
                                                      ("10.0.0.5:6379", None), ("head.example:6379", None)])
def test_only_the_embedded_ray_or_a_loopback_address_turns_on_rays_no_cluster_mode(monkeypatch, address,
                                                                                     no_cluster_mode):
    monkeypatch.setenv(NO_CLUSTER_MODE, "unset")      # so that monkeypatch restores it afterwards
    monkeypatch.delenv(NO_CLUSTER_MODE)
    keep_ray_on_loopback(address)
    assert os.environ.get(NO_CLUSTER_MODE) == no_cluster_mode


def inet_addresses(pid: int) -> set[str]:
    """Every IP a process tree listens on or talks to."""
    root, found = psutil.Process(pid), set()
    for proc in [root, *root.children(recursive=True)]:
        try:
            found |= {a.ip for c in proc.net_connections(kind="inet") for a in (c.laddr, c.raddr) if a}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def ip_of(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as the socket layer gives it; an IPv4-mapped IPv6 one as its IPv4 address."""
    return ipaddress.ip_address(text.removeprefix("::ffff:"))


def is_loopback_ip(ip: str) -> bool:
    return ip_of(ip).is_loopback


STRACE = shutil.which("strace")


def traced(argv: list[str], trace: Path) -> list[str]:
    """``argv`` under strace, which writes every connect() and bind() of it and all its
    children to ``trace`` (seccomp-bpf: only those calls stop the process)."""
    assert STRACE, "strace is missing: tests/run.sh installs it"
    return [STRACE, "-f", "-qq", "--seccomp-bpf", "-e", "trace=connect,bind", "-o", str(trace), *argv]
SOCKADDR_IP = re.compile(r'inet_addr\("([^"]+)"\)|inet_pton\(AF_INET6, "([^"]+)"')


def traced_addresses(trace: str) -> set[str]:
    """Every IP that a connect() or bind() of the traced process tree named, as strace -f
    wrote them: each attempt, however short, where sampling the open sockets misses a
    connection that lasts 50 ms."""
    return {v4 or v6 for line in trace.splitlines() if "connect(" in line or "bind(" in line
            for v4, v6 in SOCKADDR_IP.findall(line)}


def test_traced_addresses_reads_strace_lines_of_both_families():
    trace = ('15728 connect(23, {sa_family=AF_INET, sin_port=htons(80), sin_addr=inet_addr("169.254.169.254")}, 16)'
             ' = -1 EINPROGRESS (Operation now in progress)\n'
             '15 bind(11, {sa_family=AF_INET6, sin6_port=htons(0), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, '
             '"::ffff:127.0.0.1", &sin6_addr), sin6_scope_id=0}, 28) = 0\n'
             '16 connect(4, {sa_family=AF_UNIX, sun_path="/tmp/ray/session/sockets/raylet"}, 110) = 0\n')
    assert traced_addresses(trace) == {"169.254.169.254", "::ffff:127.0.0.1"}


@pytest.mark.engines
@pytest.mark.timeout(900)
def test_a_local_run_connects_and_binds_to_loopback_only(tmp_path):
    """Every connect() and bind() of the run and all its processes (Ray's included), traced.
    Ray's dashboard process asked the cloud metadata endpoint (169.254.169.254) at start-up
    and lived 50 ms on it: sampling sockets every 0.2 s caught it in one CI run in many."""
    matrix = two_ref_matrix(tmp_path, "loopback", reps=3, refs=("A",))
    trace = tmp_path / "connect.trace"
    run = subprocess.run(traced([sys.executable, "-m", "coordinator.cli", "run", matrix, "--store",
                                 (tmp_path / "store").as_uri()], trace),
                         cwd=REPO, capture_output=True, text=True, timeout=840,
                         env={**{k: v for k, v in os.environ.items() if k != NO_CLUSTER_MODE},   # hwmatrix sets it
                              "HWMATRIX_SPOOL": str(tmp_path / "spool")})
    # 1: measured, but a cell failed (an engine this machine can't run): the addresses still count
    assert run.returncode in (0, 1) and list((tmp_path / "store").rglob("results/*/*.json")), run.stdout[-3000:]
    used = traced_addresses(trace.read_text())
    assert used, "the run connected nowhere: nothing was checked"
    assert all(map(is_loopback_ip, used)), sorted(used)
