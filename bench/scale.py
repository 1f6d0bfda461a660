"""bench/scale: the coordinator's planning and dispatch bookkeeping for 10,000 cells over
100 simulated agents. Nothing is built or run, and no Ray is started.

The matrix (written to a temp dir) is 4 refs (two engines, local repo paths that need not
exist) x 10 quants x 5 threads x 5 batch x 5 ubatch x gpus {0, 1} = 10,000 cells, with a
hardware spec (cpu line epyc/threadripper(-pro)/xeon, ram >= 32 GB) that 6 of the 10
simulated hardware classes meet; the gpus=1 cells also need a GPU, which 3 of those have.
The 100 agents are the live probe's profile, varied (cpu brand/uarch/line/cores, RAM,
GPUs, hostname) into 10 classes of 10 machines, with hardware_class recomputed by
agent.machine.hwclass.hardware_class.

Timed with time.perf_counter, step by step as coordinator.cluster.run.execute does it:
load_plan; place(all cells, comparisons, done) for the placements and the unmatched cells;
build_targets; every CellSpec via to_spec(..., one_per_class=...) and the
dispatch Task objects; each task's specs as JSON (what dispatch._submit sends); the run
manifest JSON (write_manifest, into an in-memory store). Peak memory is the process's
ru_maxrss (whole process, imports included); a second, untimed pass under tracemalloc
gives the Python heap peak of the bookkeeping alone.

Also timed, and in the total: dispatch's LiveAgents.can_run for every task against a simulated
ray.nodes() list.

Targets: total < 2 s, peak memory < 500 MB.

    python bench/scale.py [--no-tracemalloc] [--profile]
"""
from __future__ import annotations

import argparse
import copy
import cProfile
import gc
import pstats
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.engine.pipeline import agent_id_for
from agent.machine.hwclass import hardware_class
from agent.machine.labels import profile_labels
from agent.machine.probe import probe
from agent.machine.profile import HardwareProfile
from agent.cluster.worker import BENCH_RESOURCE
from coordinator.cluster.dispatch import LiveAgents, Task  # imports ray, as the coordinator does
from coordinator.planning.placement import Agent, place
from coordinator.planning.plan import build_targets, load_plan
from coordinator.cluster.run import write_manifest

TARGET_S, TARGET_MB = 2.0, 500.0
AGENTS_PER_CLASS = 10

MATRIX = """\
name: scale
description: 10,000 cells for bench/scale.py; never built or run
engines:
  mainline: {kind: llama.cpp, repo: ENGINES/llama.cpp}
  ik: {kind: ik_llama.cpp, repo: ENGINES/ik_llama.cpp, build: {cmake: [-DGGML_IQK_FA_ALL_QUANTS=OFF]}}
models:
  tiny: {generate: tiny-llama}
tool: llama-bench
args: {n_prompt: 512, n_gen: 128}
repetitions: {min: 5, max: 20, target_ci_pct: 2}
hygiene: {drop_caches: prefer, warmup: 1, cooldown_s: 0}
timeout_s: 600
hardware:
  cpu: {line: [epyc, threadripper, threadripper-pro, xeon]}
  ram_gb: '>=32'
matrix:
  ref:
    - {name: b6000, engine: mainline, tag: b6000}
    - {name: b6010, engine: mainline, commit: 0123456789abcdef}
    - {name: ik-main, engine: ik, branch: main}
    - {name: ik-pr-518, engine: ik, pr: 518}
  quant: [F16, Q8_0, Q6_K, Q5_K_M, Q4_K_M, Q4_0, IQ4_XS, IQ4_NL, IQ3_XXS, IQ2_XXS]
  threads: [4, 8, 16, 32, 64]
  batch: [128, 256, 512, 1024, 2048]
  ubatch: [64, 128, 256, 512, 1024]
  gpus: [0, 1]
compare:
  baseline: {ref: b6000}
"""


def _gpu(i: int, name: str, vram_mb: int, cc: str) -> dict:
    return {"index": i, "name": name, "vram_mb": vram_mb, "driver": "570.133.07", "compute_capability": cc,
            "pcie_gen": 4, "pcie_width": 16, "power_limit_w": 350.0}


RTX3090 = ("NVIDIA GeForce RTX 3090", 24576, "8.6")
RTX4090 = ("NVIDIA GeForce RTX 4090", 24564, "8.9")
A4500 = ("NVIDIA RTX A4500", 20470, "8.6")
H100 = ("NVIDIA H100 80GB HBM3", 81559, "9.0")

# (cpu brand, vendor, uarch, line, cores, sockets, ram_gb, gpus); None = the live machine as probed
CLASSES = [
    None,                                                                                   # ram < 32: no
    ("AMD EPYC 7763 64-Core Processor", "AMD", "zen3", "epyc", 64, 1, 251.6, []),
    ("AMD EPYC 9654 96-Core Processor", "AMD", "zen4", "epyc", 192, 2, 755.2, []),
    ("AMD Ryzen Threadripper PRO 3955WX 16-Cores", "AMD", "zen2", "threadripper-pro", 16, 1, 251.5,
     [RTX3090, RTX3090, A4500]),
    ("AMD Ryzen Threadripper 7980X 64-Cores", "AMD", "zen4", "threadripper", 64, 1, 125.4, [RTX4090]),
    ("AMD Ryzen 9 7950X 16-Core Processor", "AMD", "zen4", "ryzen", 16, 1, 62.5, [RTX4090]),          # line: no
    ("AMD Ryzen 9 5950X 16-Core Processor", "AMD", "zen3", "ryzen", 16, 1, 125.7, []),               # line: no
    ("Intel(R) Xeon(R) Platinum 8480+", "Intel", "sapphirerapids", "xeon", 112, 2, 2015.6, [H100] * 8),
    ("Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", "Intel", "icelake-x", "xeon", 64, 2, 503.5, []),
    ("Intel(R) Core(TM) i9-13900K", "Intel", "raptorlake", "core", 24, 1, 62.6, [RTX4090]),       # line: no
]


def simulated_agents(live: dict) -> list[Agent]:
    """10 classes x 10 machines, shaped like probe().model_dump(); machines of one class
    differ in hostname, kernel and a little RAM (62.5 vs 62.7 GiB is one class)."""
    agents = []
    for k, spec in enumerate(CLASSES):
        for n in range(AGENTS_PER_CLASS):
            p = copy.deepcopy(live)
            if spec is not None:
                brand, vendor, uarch, line, cores, sockets, ram, gpus = spec
                p["cpu"].update(brand=brand, vendor=vendor, uarch=uarch, line=line, cores=cores,
                                threads=cores * 2, sockets=sockets, numa_nodes=sockets)
                p["memory"]["ram_gb"] = round(ram + 0.1 * (n % 3), 1)
                p["gpus"] = {"count": len(gpus), "devices": [_gpu(i, *g) for i, g in enumerate(gpus)],
                             "error": None if gpus else "no NVIDIA driver (libnvidia-ml.so not found)"}
            p["hostname"] = f"bench-c{k}-{n:02d}.lab"
            p["os"]["kernel"] = f"6.1.0-{30 + n % 4}-amd64"
            p["hardware_class"] = hardware_class(HardwareProfile.model_validate(p))
            agents.append(Agent(host=agent_id_for(p["hostname"]), hw_class=p["hardware_class"], profile=p,
                                node_id=f"{k:02x}{n:02x}".ljust(56, "0")))
    return agents


class MemoryStore:
    """What write_manifest needs of a store: put()."""
    url = "file:///tmp/hwmatrix-bench-scale"

    def __init__(self):
        self.sizes: dict[str, int] = {}

    def put(self, key: str, data: bytes, on_clash: str = "error") -> None:
        self.sizes[key] = len(data)


def bookkeeping(path: str, agents: list[Agent], tick) -> dict:
    """coordinator.cluster.run.execute's planning and dispatch bookkeeping, minus store, probe and Ray."""
    store = MemoryStore()
    plan = load_plan(path)
    tick("load_plan (parse, validate, expand)")
    run_id, records, done = plan.default_run_id, {}, set()      # a fresh run: nothing stored yet
    placements, unmatched_why = place(plan.cells, agents, plan.comparisons, done)
    cells = {c.cell_id: c for c in plan.cells}
    unmatched = [(cells[cid], why) for cid, why in unmatched_why.items()]
    matched = [c for c in plan.cells if c.cell_id not in unmatched_why]
    tick("place(all cells, comparisons, done): placements and unmatched cells")
    write_manifest(store, plan, run_id, records, "running")
    tick("manifest JSON (write_manifest)")
    targets = build_targets(matched)
    tick("build_targets")
    tasks = [Task(specs=[c.to_spec(run_id, store.url, targets[c.build_order], one_per_class=p.node_id is None)
                         for c in p.cells], hw_class=p.hw_class, node_id=p.node_id) for p in placements]
    labels = {c.cell_id: c.label for c in plan.cells}
    tick("CellSpecs (to_spec) and Tasks, labels")
    # dispatch._submit's argument, for every task (all are submitted up front)
    json_of: dict[int, str] = {}         # as dispatch does: a spec shared by tasks is serialized once
    sent = [[json_of.setdefault(id(s), s.model_dump_json()) for s in t.specs] for t in tasks]
    tick("specs to JSON (what dispatch sends)")
    payload = sum(len(j) for task_json in sent for j in task_json)
    return {"cells": len(plan.cells), "matched": len(matched), "unmatched": len(unmatched),
            "placements": len(placements), "tasks": tasks, "specs": sum(len(t.specs) for t in tasks),
            "distinct_specs": len({id(s) for t in tasks for s in t.specs}),
            "builds": len(targets), "payload_mb": payload / 2**20, "labels": len(labels),
            "classes": len({t.hw_class for t in tasks}),
            "agents_matched": sum(any(a.hw_class == t.hw_class for t in tasks) for a in agents),
            "manifest_kb": sum(store.sizes.values()) / 2**10}


def ray_nodes(agents: list[Agent]) -> list[dict]:
    """What ray.nodes() would list for the simulated agents (the fields dispatch reads)."""
    return [{"NodeID": a.node_id, "Alive": True, "Resources": {BENCH_RESOURCE: 1.0},
             "Labels": profile_labels(HardwareProfile.model_validate(a.profile))} for a in agents]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024     # KiB on Linux


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-tracemalloc", action="store_true", help="skip the second, untimed tracemalloc pass")
    ap.add_argument("--profile", action="store_true", help="cProfile the timed pass, print the top 25")
    opts = ap.parse_args()

    live = probe().model_dump()
    agents = simulated_agents(live)
    nodes = ray_nodes(agents)
    with tempfile.TemporaryDirectory(prefix="hwm-scale-") as tmp:
        path = Path(tmp) / "scale.yaml"
        path.write_text(MATRIX.replace("ENGINES", f"{tmp}/engines"))
        gc.collect()
        rss_before = rss_mb()

        phases: list[tuple[str, float]] = []
        last = [time.perf_counter()]

        def tick(name: str) -> None:
            now = time.perf_counter()
            phases.append((name, now - last[0]))
            last[0] = now

        profiler = cProfile.Profile() if opts.profile else None
        if profiler:
            profiler.enable()
        facts = bookkeeping(str(path), agents, tick)
        if profiler:
            profiler.disable()
        total = sum(s for _, s in phases)
        rss_peak = rss_mb()

        # dispatch() then asks, task by task, whether a live agent can take it (LiveAgents.can_run);
        # here against the simulated ray.nodes() list, which the real loop fetches per task
        started = time.perf_counter()
        live = LiveAgents(nodes)
        runnable = sum(live.can_run(t) for t in facts["tasks"])
        runnable_s = time.perf_counter() - started
        total += runnable_s

        heap_peak = None
        if not opts.no_tracemalloc:
            del facts["tasks"]
            gc.collect()
            tracemalloc.start()
            bookkeeping(str(path), agents, lambda name: None)
            heap_peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()

    print(f"cells {facts['cells']} ({facts['matched']} matched, {facts['unmatched']} match no agent), "
          f"{facts['builds']} builds")
    print(f"agents {len(agents)} in {len({a.hw_class for a in agents})} hardware classes; "
          f"{facts['agents_matched']} agents ({facts['classes']} classes) match some cell")
    print(f"placements (tasks) {facts['placements']}, cell specs {facts['specs']} ({facts['distinct_specs']} "
          f"distinct objects), spec JSON {facts['payload_mb']:.1f} MiB, manifest {facts['manifest_kb']:.0f} KiB")
    print()
    width = max(len(name) for name, _ in phases)
    for name, secs in phases:
        print(f"  {name:<{width}}  {secs:7.3f} s")
    print(f"  {'total':<{width}}  {total:7.3f} s   target < {TARGET_S:.0f} s: "
          f"{'ok' if total < TARGET_S else 'MISSED'}{'  (under cProfile)' if profiler else ''}")
    print(f"  (in the total) dispatch's can_run for every task over {len(nodes)} simulated nodes: "
          f"{runnable_s:.3f} s, {runnable} runnable")
    print()
    print(f"peak memory (ru_maxrss, whole coordinator process, imports and probe included): {rss_peak:.0f} MB   "
          f"target < {TARGET_MB:.0f} MB: {'ok' if rss_peak < TARGET_MB else 'MISSED'}")
    print(f"  ru_maxrss before planning (imports, probe, 100 profiles): {rss_before:.0f} MB")
    if heap_peak is not None:
        print(f"  tracemalloc peak of the bookkeeping alone (second, untimed pass): {heap_peak:.0f} MiB")
    if profiler:
        print()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    return 0 if total < TARGET_S and rss_peak < TARGET_MB else 1


if __name__ == "__main__":
    sys.exit(main())
