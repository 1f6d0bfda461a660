"""Dispatch on Ray: the same path for the embedded local Ray and a real cluster.

One task is one placement: an A/B group of cells for one hardware class (Ray's
`label_selector` picks any live agent of the class) or one machine (node affinity). Each
task holds its node's single benchmark slot. The driver never waits on a task no live node
can run, and it survives agents that die or freeze:

- a task that fails (its node was removed, its worker crashed) is submitted again, up to
  MAX_TRIES in all, to another agent of the class; with none left its cells are `lost`;
- a task whose agent reports nothing for longer than the cells' own deadline (a frozen
  machine: Ray needs about a minute to call it dead) is cancelled and submitted again
  with that node excluded;
- Ctrl-C cancels every task (force: the worker and, through its death signal, the engine
  die) and records the in-flight cells as `canceled`.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from agent.spec.cellspec import CellSpec
from agent.cluster.worker import BENCH_RESOURCE, benchmark_group, drain_spool
from agent.store.backends import no_credentials_env
from coordinator.cluster.loopback import LOOPBACK
from coordinator.cluster.no_dashboard import without_dashboard
from coordinator.cluster.progress import ProgressBoard, RunProgress
from coordinator.cluster.uploads import Granter, UploadDesk, serve_desk

MAX_TRIES = 3
BUILD_PHASES = ("checkout", "build", "quantize", "model")
BUILD_STALE_S = float(os.environ.get("HWMATRIX_BUILD_STALE_S", 3600))
STALE_MARGIN_S = float(os.environ.get("HWMATRIX_STALE_MARGIN_S", 60))     # start-up, parsing, upload
SPOOL_WAIT_S = float(os.environ.get("HWMATRIX_SPOOL_WAIT_S", 600))         # a store down for minutes
SPOOL_RETRY_S = 10.0


def without_store_credentials() -> dict:
    """The runtime env of agents that upload through granted URLs: none of the coordinator
    machine's credentials for any store backend reach them."""
    return {"env_vars": no_credentials_env()}


@dataclass
class Outcome:
    cell_id: str
    record: dict | None
    error: str | None = None
    status: str = "ok"
    hw_class: str | None = None


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a dispatch: every task was cancelled; ``outcomes`` says what happened."""

    def __init__(self, outcomes: list[Outcome]):
        super().__init__()
        self.outcomes = outcomes


@dataclass
class Task:
    """One placement in flight: its specs, where it may run, how often it was tried."""
    specs: list[CellSpec]
    hw_class: str
    node_id: str | None = None
    excluded: list[str] = field(default_factory=list)
    tries: int = 0
    submitted: float = 0.0

    def selector(self) -> dict[str, str]:
        selector = {"hwm-class": self.hw_class}
        if self.excluded:
            selector["ray.io/node-id"] = f"!in({','.join(self.excluded)})"
        return selector

    def stale_after(self, phase: str) -> float:
        """No news for this long means the agent is frozen: the cells' own deadline (plus a
        minute for start-up and upload), or the build allowance while building."""
        if phase in BUILD_PHASES:
            return BUILD_STALE_S
        return max(s.timeout_s for s in self.specs) + STALE_MARGIN_S


def start_local_ray(labels: dict[str, str]) -> None:
    """An embedded one-node Ray whose node carries this machine's profile as labels. It
    listens on and addresses 127.0.0.1 only, provided coordinator.cluster.loopback set Ray's
    no-cluster mode before ray was imported (else Ray swaps 127.0.0.1 for the interface's)."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # address="local": always a fresh embedded Ray, never a cluster this machine happens to
    # run (plain ray.init() would join it through /tmp/ray or $RAY_ADDRESS)
    with without_dashboard():           # whose start-up asks the cloud metadata endpoints
        ray.init(address="local", num_cpus=os.cpu_count() or 1, resources={BENCH_RESOURCE: 1}, labels=labels,
                 include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                 configure_logging=True, _node_ip_address=LOOPBACK)


def live_bench_nodes() -> list[dict]:
    return [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get(BENCH_RESOURCE)]


class LiveAgents:
    """The live agents, indexed by class, so asking "can any of them take this task" is
    cheap for thousands of tasks."""

    def __init__(self, nodes: list[dict]):
        self.ids = {n["NodeID"] for n in nodes}
        self.hosts = {n["NodeID"]: n.get("Labels", {}).get("hwm-host", n["NodeID"][:8]) for n in nodes}
        self.by_class: dict[str, set[str]] = {}
        for n in nodes:
            self.by_class.setdefault(n.get("Labels", {}).get("hwm-class"), set()).add(n["NodeID"])

    def can_run(self, task: Task) -> bool:
        """Some live agent can take the task (else it would wait forever)."""
        if task.node_id is not None:
            return task.node_id in self.ids
        return bool(self.by_class.get(task.hw_class, set()) - set(task.excluded))


def _submit(task: Task, board, as_json: dict[int, str], desk=None):
    task.tries += 1
    task.submitted = time.time()
    payload = [as_json.setdefault(id(s), s.model_dump_json()) for s in task.specs]
    if task.node_id is not None:
        options = {"scheduling_strategy": NodeAffinitySchedulingStrategy(task.node_id, soft=False)}
    else:
        options = {"label_selector": task.selector()}
    if desk is not None:
        options["runtime_env"] = without_store_credentials()
    return benchmark_group.options(**options).remote(payload, board, desk)


def dispatch(tasks: list[Task], labels_of: dict[str, str], already_done: int = 0,
             total: int | None = None, granter: Granter | None = None) -> list[Outcome]:
    """Run every task; returns one Outcome per cell and task (ok, lost or canceled). With a
    ``granter`` the agents upload through presigned URLs the driver signs as they ask."""
    # the board and desk live beside the driver: on an agent they would freeze or die with it
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    board = ProgressBoard.options(scheduling_strategy=here).remote()
    desk = UploadDesk.options(scheduling_strategy=here).remote() if granter else None
    phases: dict = {}
    warned = 0
    pending, outcomes, as_json = {}, [], {}     # a spec shared by several tasks is serialized once
    total = total if total is not None else sum(len(t.specs) for t in tasks)

    def give_up(task: Task, status: str, why: str) -> None:
        for spec in task.specs:
            outcomes.append(Outcome(spec.cell_id, None, why, status, task.hw_class))
            progress.cell_done(labels_of.get(spec.cell_id, spec.cell_id), status)

    def retry_or_lose(task: Task, why: str) -> None:
        if task.tries < MAX_TRIES and LiveAgents(live_bench_nodes()).can_run(task):
            progress.note(f"retrying {len(task.specs)} cell(s) on another agent of class {task.hw_class}: {why}")
            pending[_submit(task, board, as_json, desk)] = task
        else:
            give_up(task, "lost", f"{why}; tried {task.tries} time(s), no other agent of class {task.hw_class} left")

    with RunProgress(total, already_done) as progress:
        try:                                    # a Ctrl-C from the first submission to the last delivery
            live = LiveAgents(live_bench_nodes())
            for task in tasks:
                if live.can_run(task):
                    pending[_submit(task, board, as_json, desk)] = task
                else:
                    give_up(task, "lost", f"no live agent of class {task.hw_class}")
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                if desk is not None:
                    _serve(desk, granter, progress)
                try:
                    phases = ray.get(board.snapshot.remote(), timeout=5)
                    for cell_id, detail in ray.get(board.warnings_after.remote(warned), timeout=5):
                        warned += 1
                        progress.note(f"{labels_of.get(cell_id, cell_id)}: warning: {detail}")
                except Exception:  # noqa: BLE001 - progress is best effort: keep the last view
                    pass
                _show(progress, pending, phases, labels_of, live.hosts)
                for ref in done:
                    task = pending.pop(ref)
                    try:
                        records = {r["cell_id"]: r for r in ray.get(ref)}
                    except Exception as exc:  # noqa: BLE001 - a node died, a worker crashed
                        retry_or_lose(task, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
                        continue
                    for spec in task.specs:
                        label = labels_of.get(spec.cell_id, spec.cell_id)
                        record = records.get(spec.cell_id)
                        outcomes.append(Outcome(spec.cell_id, record))
                        progress.cell_done(label, record["status"] if record else "ok (recorded by another agent)")
                now, live = time.time(), LiveAgents(live_bench_nodes())
                for ref, task in list(pending.items()):
                    news = [phases[s.cell_id] for s in task.specs if s.cell_id in phases
                            and phases[s.cell_id][2] >= task.submitted]
                    if news:
                        phase, _, when, node = max(news, key=lambda n: n[2])
                        if now - when > task.stale_after(phase):
                            ray.cancel(ref, force=True)
                            pending.pop(ref)
                            if node and task.node_id is None:
                                task.excluded.append(node)
                            retry_or_lose(task, f"agent {node or '?'} sent nothing for {now - when:.0f} s "
                                                f"(frozen?) while in {phase}")
                    elif not live.can_run(task):
                        ray.cancel(ref, force=True)
                        pending.pop(ref)
                        give_up(task, "lost", f"no live agent of class {task.hw_class} left")
            _drain(outcomes, desk, granter, progress)
        except KeyboardInterrupt:
            for ref, task in pending.items():
                ray.cancel(ref, force=True)
                give_up(task, "canceled", "canceled by the user (Ctrl-C)")
            raise Interrupted(outcomes) from None
    ray.kill(board)
    if desk is not None:
        ray.kill(desk)
    return outcomes


def _drain(outcomes: list[Outcome], desk, granter: Granter | None, progress: RunProgress) -> None:
    """Records left in agents' spools (the store was down) are delivered before the run
    ends: ask those agents to flush, again every SPOOL_RETRY_S, up to SPOOL_WAIT_S. What is
    still spooled then stays marked ``spooled_on`` (the manifest says where)."""
    waiting = {o.record["spooled_node"]: o.record["run_id"] for o in outcomes if o.record and o.record.get("spooled_node")}
    deadline = time.monotonic() + SPOOL_WAIT_S
    while waiting and time.monotonic() < deadline:
        options = {"runtime_env": without_store_credentials()} if desk is not None else {}
        refs = {drain_spool.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False), **options)
                .remote(run_id, desk): node for node, run_id in waiting.items()}
        while True:
            done, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0.5)
            if desk is not None:
                _serve(desk, granter, progress)
            if len(done) == len(refs):
                break
        for ref, node in refs.items():
            try:
                left = ray.get(ref)
            except Exception:  # noqa: BLE001 - the agent is gone; its spool waits for its return
                left = 0
            if not left:
                waiting.pop(node)
        if waiting:
            progress.note(f"records wait in {len(waiting)} agent spool(s): the store does not take them yet; "
                          f"trying again in {SPOOL_RETRY_S:.0f} s (until {SPOOL_WAIT_S:.0f} s have passed)")
            time.sleep(SPOOL_RETRY_S)
    for outcome in outcomes:
        if outcome.record and outcome.record.get("spooled_node") not in waiting:
            outcome.record.pop("spooled_on", None)


def _serve(desk, granter: Granter, progress: RunProgress) -> None:
    """Answer the agents' upload requests; a store hiccup only delays them."""
    seen = len(granter.clashes)
    try:
        serve_desk(desk, granter)
    except Exception as exc:  # noqa: BLE001 - the agents retry; their records stay spooled meanwhile
        progress.note(f"could not sign uploads just now: {exc}")
    for clash in granter.clashes[seen:]:
        progress.note(f"clash: {clash}")


def _show(progress: RunProgress, pending: dict, phases: dict, labels_of: dict[str, str],
          hosts: dict[str, str]) -> None:
    """Per agent, the latest phase of the cell it is running."""
    waiting = {s.cell_id for task in pending.values() for s in task.specs}
    latest: dict[str, tuple] = {}
    for cid, (phase, detail, when, node) in phases.items():
        if cid in waiting and (node not in latest or when > latest[node][0]):
            latest[node] = (when, cid, phase, detail)
    for node, (_, cid, phase, detail) in latest.items():
        agent = hosts.get(node or "", (node or "agent")[:8])
        progress.show_agent(agent, labels_of.get(cid, cid), phase, detail)
