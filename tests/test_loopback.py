"""On one machine hwmatrix's Ray keeps to 127.0.0.1: a local run's embedded Ray listens on and
talks to loopback only, and a driver of a cluster on this machine joins it on loopback (the
test cluster's addresses are checked in test_cluster)."""
from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import time

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


def is_loopback_ip(ip: str) -> bool:
    return ipaddress.ip_address(ip.removeprefix("::ffff:")).is_loopback


@pytest.mark.engines
@pytest.mark.timeout(900)
def test_a_local_run_listens_on_and_talks_to_loopback_only(tmp_path):
    matrix = two_ref_matrix(tmp_path, "loopback", reps=3, refs=("A",))
    log = tmp_path / "run.log"                      # a file, not a pipe nobody reads while the run goes on
    proc = subprocess.Popen([sys.executable, "-m", "coordinator.cli", "run", matrix, "--store",
                             (tmp_path / "store").as_uri()], cwd=REPO, stdout=log.open("w"),
                            stderr=subprocess.STDOUT,
                            env={**{k: v for k, v in os.environ.items() if k != NO_CLUSTER_MODE},   # hwmatrix sets it
                                 "HWMATRIX_SPOOL": str(tmp_path / "spool")})
    used: set[str] = set()
    while proc.poll() is None:                      # every socket the run opens, all along
        try:
            used |= inet_addresses(proc.pid)
        except psutil.NoSuchProcess:                # it ended just now
            break
        time.sleep(0.2)
    proc.wait()
    # 1: measured, but a cell failed (an engine this machine can't run): the addresses still count
    assert proc.returncode in (0, 1) and list((tmp_path / "store").rglob("results/*/*.json")), log.read_text()[-3000:]
    assert used, "the run opened no socket: nothing was checked"
    assert all(map(is_loopback_ip, used)), sorted(used)
