"""A 3-agent Ray test cluster in its own process: Ray reads RAY_AUTH_MODE when it is
imported, so token auth must be set before `import ray`, which the pytest process has long
done. Every node, and this process as a driver, is on 127.0.0.1 only (coordinator.cluster.loopback).
Prints one JSON line (address, nodes, classes, start time), then obeys stdin:
`busy` (print the hosts holding their benchmark slot), `nodes` (every node's NodeManagerAddress),
`remove HOST`, `freeze HOST` /
`thaw HOST` (SIGSTOP / SIGCONT the node's raylet and all its workers), `killtask HOST...`
(SIGKILL the benchmark worker running on any of them), `quit`."""
from __future__ import annotations

import json
import os
import signal
import sys
import time


def say(value) -> None:
    """One answer line; the marker tells it apart from anything Ray prints on stdout."""
    print("@@" + json.dumps(value), flush=True)


def main(root: str, token: str, agents_json: str) -> None:
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=token, RAY_USAGE_STATS_ENABLED="0")
    from coordinator.cluster.loopback import LOOPBACK, keep_ray_on_loopback
    from coordinator.cluster.no_dashboard import without_dashboard

    keep_ray_on_loopback()
    import ray
    from ray.cluster_utils import Cluster

    from agent.machine.labels import profile_labels
    from agent.machine.probe import probe

    agents = json.loads(agents_json)
    started = time.monotonic()
    with without_dashboard():       # as hwmatrix's own heads
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"hwmatrix_bench": 0},
                                                                "node_ip_address": LOOPBACK})
    nodes, classes = {}, {}
    for host, cpu in agents.items():
        override = os.path.join(root, f"{host}.json")
        with open(override, "w") as handle:
            json.dump({"hostname": host, "cpu": cpu}, handle)
        os.environ["HWMATRIX_PROFILE"] = override
        profile = probe()
        classes[host] = profile.hardware_class
        nodes[host] = cluster.add_node(num_cpus=2, resources={"hwmatrix_bench": 1}, labels=profile_labels(profile),
                                       node_ip_address=LOOPBACK,
                                       env_vars={"HWMATRIX_PROFILE": override,
                                                 "HWMATRIX_SPOOL": os.path.join(root, f"spool-{host}")})
    os.environ.pop("HWMATRIX_PROFILE")
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR")
    say({"address": cluster.address, "nodes": {h: n.node_id for h, n in nodes.items()},
                      "classes": classes, "start_s": round(time.monotonic() - started, 1)})
    for line in sys.stdin:
        command = line.split()
        if not command or command[0] == "quit":
            break
        try:
            obey(command, cluster, nodes)
        except Exception as exc:  # noqa: BLE001 - one failed command must not take the cluster down
            say({"error": f"{type(exc).__name__}: {exc}"})
    ray.shutdown()
    cluster.shutdown()


def obey(command: list[str], cluster, nodes: dict) -> None:
    """One test command; every answer goes out through `say`."""
    import ray

    if command[0] == "busy":
        free = ray._private.state.available_resources_per_node()
        say([h for h, n in nodes.items()
                          if n.node_id in free and free[n.node_id].get("hwmatrix_bench", 0) < 1])
    elif command[0] == "nodes":
        say(sorted(n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")))
    elif command[0] == "remove":
        cluster.remove_node(nodes.pop(command[1]))
        say("removed")
    elif command[0] in ("freeze", "thaw"):
        sig = signal.SIGSTOP if command[0] == "freeze" else signal.SIGCONT
        for _ in range(2):                     # twice: a process may have been forked mid-way
            for proc in _node_processes(nodes[command[1]]):
                _signal(proc, sig)
        say(command[0])
    elif command[0] == "killtask":
        killed = [p.pid for host in command[1:] if host in nodes
                  for p in _node_processes(nodes[host]) if "benchmark_group" in " ".join(_cmd(p))]
        for pid in killed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        say(killed)


def _signal(proc, sig) -> None:
    """Signal a process that may have exited since it was listed."""
    import psutil

    try:
        proc.send_signal(sig)
    except (psutil.NoSuchProcess, psutil.ZombieProcess, ProcessLookupError):
        pass


def _cmd(proc) -> list[str]:
    try:
        return proc.cmdline()
    except Exception:  # noqa: BLE001 - gone already
        return []


def _node_processes(node) -> list:
    """The node's raylet and everything under it (workers, engines)."""
    import psutil

    raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
    return [raylet, *raylet.children(recursive=True)]


if __name__ == "__main__":
    main(*sys.argv[1:4])
