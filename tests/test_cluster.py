"""A real multi-node Ray cluster on one machine (ray.cluster_utils.Cluster): three agents
with different hardware profiles (injected through HWMATRIX_PROFILE), token auth on,
real llama-bench builds. Cells land only on matching agents, a node's measurements never
overlap, a node removed mid-run still leaves a complete, duplicate-free result set, a
wrong token is refused, Ctrl-C stops a run, and everything is on 127.0.0.1."""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime, timedelta

import psutil
import pytest

from tests.conftest import REPO, hwmatrix, two_ref_matrix
from tests.test_loopback import inet_addresses, is_loopback_ip

pytestmark = pytest.mark.engines

ZEN4 = {"brand": "AMD Ryzen 9 7950X 16-Core Processor", "uarch": "zen4", "line": "ryzen"}
ZEN5 = {"brand": "AMD EPYC 9115 16-Core Processor", "uarch": "zen5", "line": "epyc"}
AGENTS = {"zen4-a": ZEN4, "zen4-b": ZEN4, "zen5-c": ZEN5}


def _matrix(tmp_path, name: str, uarch: str | None, quants=("Q8_0",), reps: int = 3, timeout_s: int = 300) -> str:
    return two_ref_matrix(tmp_path, name, quants, reps, timeout_s, uarch)


class ClusterHelper:
    """The helper process that owns the cluster; commands go over its stdin."""

    def __init__(self, root):
        self.root = root
        self.token = str(root / "token")
        (root / "token").write_text(secrets.token_hex(32))
        (root / "token").chmod(0o600)
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.cluster_helper", str(root), self.token,
                                      json.dumps(AGENTS)], cwd=REPO, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, start_new_session=True)
        info = self._answer()
        self.address, self.classes, self.start_s = info["address"], info["classes"], info["start_s"]
        print(f"\n3-agent test cluster started in {self.start_s} s")

    def _answer(self):
        """The helper's next answer, skipping whatever Ray prints on its stdout."""
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the cluster helper exited")
            if line.startswith("@@"):
                return json.loads(line[2:])

    def ask(self, command: str):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def close(self) -> None:
        """Quit the helper; whatever of its cluster is left (a crash, a frozen node) is killed."""
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=120)
        except Exception:  # noqa: BLE001 - the cluster must not outlive the tests
            self.proc.kill()
        try:
            os.killpg(self.proc.pid, signal.SIGCONT)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    helper = ClusterHelper(tmp_path_factory.mktemp("cluster"))
    yield helper
    helper.close()


def _run(cluster, matrix: str, store, *extra: str) -> subprocess.CompletedProcess:
    return hwmatrix("run", matrix, "--address", cluster.address, "--token-file", cluster.token,
                    "--store", store.as_uri(), *extra, env={"HWMATRIX_SPOOL": str(cluster.root / "spool-driver")})


def _records(store) -> list[dict]:
    return [json.loads(p.read_text()) for p in store.glob("runs/*/results/*/*.json")]


def test_agents_are_listed_by_hardware_class_and_idle(cluster):
    result = hwmatrix("agents", "--address", cluster.address, "--token-file", cluster.token)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("class ") == 2
    for host in AGENTS:
        assert host in result.stdout
    assert "zen4" in result.stdout and "zen5" in result.stdout and "idle" in result.stdout


def test_cells_land_only_on_matching_agents_and_never_overlap_on_a_node(cluster, tmp_path):
    store = tmp_path / "store"
    result = _run(cluster, _matrix(tmp_path, "zen4only", "zen4", quants=("Q8_0", "Q4_0")), store)
    assert result.returncode == 0, result.stderr[-3000:]
    records = _records(store)
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    assert {r["agent_id"] for r in records} <= {"zen4-a", "zen4-b"}
    assert {r["hardware_class"] for r in records} == {cluster.classes["zen4-a"]}
    spans = defaultdict(list)
    for r in records:
        for start, wall in zip(r["tool"]["started"], r["tool"]["wall_s"]):
            begin = datetime.fromisoformat(start)
            spans[r["agent_id"]].append((begin, begin + timedelta(seconds=wall)))
    for node_spans in spans.values():
        node_spans.sort()
        for (_, end), (start, _) in zip(node_spans, node_spans[1:]):
            assert end <= start


def test_plan_and_run_refuse_cells_no_agent_matches_with_each_agents_reason(cluster, tmp_path):
    matrix = _matrix(tmp_path, "zen3only", "zen3")
    plan = hwmatrix("plan", matrix, "--address", cluster.address, "--token-file", cluster.token)
    assert plan.returncode == 0, plan.stderr
    assert "0 of 2 cells have an agent" in plan.stdout
    run = _run(cluster, matrix, tmp_path / "store")
    assert run.returncode == 2
    for host in AGENTS:
        assert host in run.stderr
    assert "match no enrolled agent" in run.stderr and "Traceback" not in run.stderr


def test_a_wrong_token_is_refused_with_a_clear_message(cluster, tmp_path):
    """`agent join` with a wrong token is in test_enroll: `ray start` cannot join a cluster on
    loopback (coordinator.cluster.loopback)."""
    bad = tmp_path / "bad-token"
    bad.write_text(secrets.token_hex(32))
    run = hwmatrix("agents", "--address", cluster.address, "--token-file", str(bad))
    assert run.returncode == 2 and "Traceback" not in run.stderr


def test_the_test_cluster_and_its_drivers_address_only_loopback(cluster):
    host, _ = cluster.address.rsplit(":", 1)
    assert host == "127.0.0.1"                      # what every test hands to `run --address`
    assert cluster.ask("nodes") == ["127.0.0.1"] * (1 + len(AGENTS))
    listing = hwmatrix("agents", "--address", cluster.address, "--token-file", cluster.token)
    assert listing.returncode == 0, listing.stderr
    rows = [line.split() for line in listing.stdout.splitlines() if line.split()[:1] and line.split()[0] in AGENTS]
    assert sorted((r[0], r[1]) for r in rows) == [(h, "127.0.0.1") for h in sorted(AGENTS)]
    used = inet_addresses(cluster.proc.pid)
    assert used and all(map(is_loopback_ip, used)), sorted(used)


def _wait_idle(cluster, hosts=("zen4-a", "zen4-b")) -> None:
    """Before a run whose agents a test watches: no slot is held by an earlier test's task,
    so the next busy agent is this run's."""
    deadline = time.monotonic() + 120
    while any(h in hosts for h in cluster.ask("busy")):
        assert time.monotonic() < deadline, "an earlier test's task still holds an agent"
        time.sleep(0.2)


def _wait_busy(cluster, hosts=("zen4-a", "zen4-b")) -> str:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        busy = [h for h in cluster.ask("busy") if h in hosts]
        if busy:
            return busy[0]
        time.sleep(0.2)
    raise AssertionError("no agent took a cell")


def _start_run(cluster, matrix: str, store, *extra: str, env: dict | None = None,
               sigint_ignored: bool = False) -> subprocess.Popen:
    """``sigint_ignored``: started as a shell without job control starts `cmd &`."""
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
    return subprocess.Popen([sys.executable, "-m", "coordinator.cli", "run", matrix, "--address", cluster.address,
                             "--token-file", cluster.token, "--store", store.as_uri(), *extra], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ignore,
                            env={**os.environ, "HWMATRIX_SPOOL": str(cluster.root / "spool-driver"), **(env or {})})


def _one_ok_per_cell(store, n_cells: int) -> list[dict]:
    records = _records(store)
    by_cell = defaultdict(list)
    for r in records:
        by_cell[r["cell_id"]].append(r)
    assert len(by_cell) == n_cells
    assert all(len(recs) == 1 and recs[0]["status"] == "ok" for recs in by_cell.values()), \
        {cid: [(r["agent_id"], r["status"]) for r in recs] for cid, recs in by_cell.items()}
    assert not list(store.rglob(".tmp-*"))                 # no half-written record anywhere
    return records


def test_a_matrix_for_every_class_prints_one_column_group_per_class(cluster, tmp_path):
    result = _run(cluster, _matrix(tmp_path, "everywhere", None), tmp_path / "store")
    assert result.returncode == 0, result.stderr[-3000:]
    header = result.stdout.splitlines()[0]
    for hw_class in set(cluster.classes.values()):
        assert f"[{hw_class}] pp t/s" in header and f"[{hw_class}] Δ tg" in header
    records = _records(tmp_path / "store")
    assert len(records) == 4 and {r["hardware_class"] for r in records} == set(cluster.classes.values())


def test_a_frozen_agent_is_caught_by_the_cells_deadline_and_its_cells_run_elsewhere(cluster, tmp_path):
    store = tmp_path / "store"
    proc = _start_run(cluster, _matrix(tmp_path, "frozen", "zen4", quants=("Q8_0", "Q4_0"), reps=20, timeout_s=10),
                      store, env={"HWMATRIX_STALE_MARGIN_S": "5"})
    victim = _wait_busy(cluster)
    time.sleep(1)
    assert cluster.ask(f"freeze {victim}") == "freeze"
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        cluster.ask(f"thaw {victim}")
    assert proc.returncode == 0, err[-3000:]
    assert "sent nothing for" in err and "retrying" in err
    records = _one_ok_per_cell(store, 4)
    assert any(r["agent_id"] != victim for r in records)


def test_an_agent_worker_killed_with_sigkill_leaves_no_half_record_and_its_cells_are_retried(cluster, tmp_path):
    store = tmp_path / "store"
    proc = _start_run(cluster, _matrix(tmp_path, "sigkill", "zen4", quants=("Q8_0", "Q4_0"), reps=20), store)
    _wait_busy(cluster)
    time.sleep(2)
    killed, deadline = [], time.monotonic() + 60
    while not killed and time.monotonic() < deadline:      # a node left over from the freeze may hold a slot idle
        killed = cluster.ask("killtask zen4-a zen4-b")
        time.sleep(0.5)
    assert killed, "no benchmark worker found to kill"
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "retrying" in err
    _one_ok_per_cell(store, 4)


def test_a_killed_coordinator_resumes_without_redoing_finished_cells(cluster, tmp_path):
    store = tmp_path / "store"
    matrix = _matrix(tmp_path, "resume", "zen4", quants=("Q8_0", "Q4_0", "F16"), reps=3)
    proc = _start_run(cluster, matrix, store)
    deadline = time.monotonic() + 300
    while not _records(store) and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    # a task of the killed driver may store one more record before Ray reaps it: wait for quiet
    quiet, seen = time.monotonic(), len(_records(store))
    while time.monotonic() - quiet < 8:
        time.sleep(0.5)
        if len(_records(store)) != seen:
            quiet, seen = time.monotonic(), len(_records(store))
    before = {p: p.stat().st_mtime_ns for p in store.glob("runs/*/results/*/*.json")}
    assert before
    again = _run(cluster, matrix, store)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{len(before)} results already recorded" in again.stderr
    after = {p: p.stat().st_mtime_ns for p in store.glob("runs/*/results/*/*.json")}
    assert all(after[p] == t for p, t in before.items())
    _one_ok_per_cell(store, 6)


def _engines(cluster) -> set[int]:
    """The llama-bench processes the test cluster's agents run (not other jobs' on this machine)."""
    found = set()
    for proc in psutil.Process(cluster.proc.pid).children(recursive=True):
        try:
            if any("llama-bench" in part for part in proc.cmdline()):
                found.add(proc.pid)
        except psutil.Error:
            pass
    return found


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _ctrl_c(cluster, tmp_path, sigint_ignored: bool = False) -> None:
    store = tmp_path / "store"
    _wait_idle(cluster)
    proc = _start_run(cluster, _matrix(tmp_path, "ctrlc", "zen4", quants=("Q8_0", "Q4_0"), reps=40), store,
                      sigint_ignored=sigint_ignored)
    try:
        _wait_busy(cluster)
        time.sleep(2)
        engines = _engines(cluster)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:                 # the Ctrl-C was lost: the run must not hold the agents
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    statuses = {r["status"] for r in _records(store)}
    assert "canceled" in statuses
    time.sleep(2)
    leftover = _engines(cluster) | {pid for pid in engines if _alive(pid)}     # orphans included
    assert not leftover


def test_ctrl_c_cancels_every_cell_records_them_and_leaves_no_engine_running(cluster, tmp_path):
    _ctrl_c(cluster, tmp_path)


def test_ctrl_c_stops_a_run_that_a_shell_started_with_sigint_ignored(cluster, tmp_path):
    """`hwmatrix run ... &` from a script, a CI step or a background test run inherits SIGINT
    ignored; the run still stops on it (the cause of issue 11's lost Ctrl-C)."""
    _ctrl_c(cluster, tmp_path, sigint_ignored=True)


def test_a_bisect_on_the_cluster_runs_every_step_on_one_agent_of_the_named_class(cluster, tmp_path):
    """Ends, midpoints and the confirmation share hardware: every build and every process of a
    bisect runs on the one agent it picked of --class (zen4: two agents to choose from)."""
    from tests.chains import CHAIN_TWO, chain_repo

    repo, shas = chain_repo(tmp_path, CHAIN_TWO[:3])     # docs, slow, neutral: test_bisect built them
    store = tmp_path / "store"
    result = hwmatrix("bisect", "--repo", str(repo), "--good", "v0.3.36", "--bad", "chain", "-m", "tiny",
                      "--address", cluster.address, "--token-file", cluster.token, "--class",
                      cluster.classes["zen4-a"], "--store", store.as_uri(),
                      env={"HWMATRIX_SPOOL": str(cluster.root / "spool-driver")})
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"culprit **{shas[2][:12]}**" in result.stdout
    records = _records(store)
    groups = {r["run_id"] for r in records}
    assert len(groups) >= 2, groups          # the ends and at least one step after them
    assert {r["agent_id"] for r in records} == {"zen4-a"}, {r["agent_id"] for r in records}
    journal = json.loads(next(store.glob("bisects/*/journal.json")).read_text())
    assert journal["host"] == "zen4-a" and journal["hw_class"] == cluster.classes["zen4-a"]


def test_a_node_removed_mid_run_leaves_a_complete_duplicate_free_result_set(cluster, tmp_path):
    """Last in the file: it takes one zen4 agent away for good."""
    store = tmp_path / "store"
    matrix = _matrix(tmp_path, "survive", "zen4", quants=("Q8_0", "Q4_0"), reps=12)
    proc = subprocess.Popen([sys.executable, "-m", "coordinator.cli", "run", matrix, "--address", cluster.address,
                             "--token-file", cluster.token, "--store", store.as_uri()], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HWMATRIX_SPOOL": str(cluster.root / "spool-driver2")})
    victim, deadline = None, time.monotonic() + 120
    while victim is None and time.monotonic() < deadline:
        busy = [h for h in cluster.ask("busy") if h in ("zen4-a", "zen4-b")]
        victim = busy[0] if busy else None
        time.sleep(0.2)
    assert victim, "no zen4 agent took a cell"
    time.sleep(3)                                   # well into its build check / measurement
    assert cluster.ask(f"remove {victim}") == "removed"
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    records = _records(store)
    by_cell = defaultdict(list)
    for r in records:
        by_cell[r["cell_id"]].append(r)
    assert len(by_cell) == 4
    assert all(len(recs) == 1 and recs[0]["status"] == "ok" for recs in by_cell.values()), \
        {cid: [(r["agent_id"], r["status"]) for r in recs] for cid, recs in by_cell.items()}
    survivor = {"zen4-a", "zen4-b"} - {victim}
    assert any(r["agent_id"] in survivor for r in records)

