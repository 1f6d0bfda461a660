"""`hwmatrix cluster up|down` and `hwmatrix agents`: the coordinator's Ray head and its view
of the enrolled agents.

Every cluster hwmatrix starts has Ray's token authentication on; the token lives in a
0600 file and travels to agents out of band, never through argv, a matrix or a record.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from tabulate import tabulate

from agent.cluster.auth import TokenError, token_env
from agent.cluster.enroll import EnrollError, check_address, check_reachable, explain_failure, ray_start
from agent.paths import default_token_path
from agent.cluster.worker import BENCH_RESOURCE
from coordinator.errors import EXIT_OK, UserError


def ensure_token(path: Path) -> Path:
    """A fresh random token in a 0600 file, unless one is there already."""
    if path.is_file() and path.read_text().strip():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32) + "\n")
    return path


def cluster_up(bind: str, port: int, token_file: str | None, bench: bool, block: bool) -> int:
    """Start the Ray head, print the join command."""
    token = ensure_token(Path(token_file) if token_file else default_token_path())
    address = check_address(f"{bind}:{port}")
    # `ray start` with no dashboard process (coordinator.cluster.no_dashboard)
    argv = [sys.executable, "-m", "coordinator.cluster.no_dashboard", "start", "--head", "--node-ip-address", bind,
            "--port", str(port),
            "--resources", json.dumps({BENCH_RESOURCE: 1 if bench else 0}), "--include-dashboard", "false",
            "--disable-usage-stats"]
    if bench:
        from agent.machine.labels import profile_labels
        from agent.machine.probe import probe
        argv += ["--labels", ",".join(f"{k}={v}" for k, v in sorted(profile_labels(probe()).items()))]
    env = {**os.environ, **token_env(token)}
    join = f"hwmatrix agent join --address {address} --token-file {token}"
    if block:       # the join command is printed once the head takes connections
        return ray_start(argv + ["--block"], env, block=True, ready_at=address, on_ready=lambda: print(
            f"Ray head on {address} (token auth on). Agents join with:\n  {join}", flush=True))
    try:
        ray_start(argv, env, block=False)
    except EnrollError as exc:
        raise UserError(f"ray start --head failed: {exc}") from None
    print(f"Ray head on {address}, token authentication on (token file {token}, mode 0600).\n"
          f"Copy the token file to each agent out of band, then run there:\n  {join}\n"
          f"Run a matrix on the cluster with:\n  hwmatrix run FILE --address {address} --token-file {token}\n"
          "Ray's GCS listens on every interface: keep the port firewalled to your agents.")
    return EXIT_OK


def cluster_down() -> int:
    subprocess.run([shutil.which("ray") or "ray", "stop"], capture_output=True, text=True, timeout=120)
    print("stopped the Ray processes of this machine")
    return EXIT_OK


def connect(address: str, token_file: str | None) -> None:
    """Join the cluster as a driver. The token variables are already set (cli.py calls
    agent.cluster.auth.use_token before ray is imported); a wrong token fails fast and clearly."""
    import ray
    from ray._raylet import GcsClient

    if ray.is_initialized():            # joined already (a bisect runs one run per step)
        return
    try:
        token_env(token_file)
        check_address(address)
        check_reachable(address)
    except (TokenError, EnrollError) as exc:
        raise UserError(str(exc)) from None
    try:
        GcsClient(address=address)          # answers at once, where ray.init retries for a while
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    except Exception as exc:  # noqa: BLE001 - Ray raises several kinds for one cause
        raise UserError(f"cannot join the cluster at {address}: {explain_failure(str(exc))}") from None


def agent_states() -> list[dict]:
    """Every node that ever offered a benchmark slot: labels, and idle / busy / lost."""
    import ray

    available = ray._private.state.available_resources_per_node()   # no public per-node view in 2.60
    agents = []
    for node in ray.nodes():
        if not node.get("Resources", {}).get(BENCH_RESOURCE):
            continue
        labels = node.get("Labels", {})
        if not node.get("Alive"):
            state = "lost"
        elif available.get(node["NodeID"], {}).get(BENCH_RESOURCE, 0) < 1:
            state = "busy"
        else:
            state = "idle"
        agents.append({"node_id": node["NodeID"], "address": node.get("NodeManagerAddress"), "labels": labels,
                       "state": state})
    return agents


def list_agents(address: str, token_file: str | None) -> int:
    """`hwmatrix agents`: enrolled agents grouped by hardware class."""
    connect(address, token_file)
    by_class: dict[str, list[dict]] = defaultdict(list)
    for agent in agent_states():
        by_class[agent["labels"].get("hwm-class", "?")].append(agent)
    if not by_class:
        print("no agents enrolled (run `hwmatrix agent join` on a benchmark machine)")
        return EXIT_OK
    for hw_class, agents in sorted(by_class.items()):
        first = agents[0]["labels"]
        print(f"class {hw_class}: {first.get('hwm-vendor', '?')} {first.get('hwm-uarch', '?')} "
              f"({first.get('hwm-line', '?')}), {first.get('hwm-cores', '?')} cores, "
              f"{first.get('hwm-ram-gb', '?')} GB RAM, {first.get('hwm-gpus', '0')} GPU(s) "
              f"{first.get('hwm-gpu-name', '') if first.get('hwm-gpus', '0') != '0' else ''}".rstrip())
        rows = [(a["labels"].get("hwm-host", "?"), a["address"], a["node_id"][:12], a["state"]) for a in agents]
        print(tabulate(rows, headers=["host", "address", "node", "state"], tablefmt="simple"))
        print()
    return EXIT_OK
