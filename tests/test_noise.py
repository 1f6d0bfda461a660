"""`hwmatrix noise` (#13 item 5): the between-process CV of a class's cells and the smallest
change the verdict rule resolves with it, from a real file store of synthetic records;
expected numbers are computed here from the samples, never typed in."""
from __future__ import annotations

import math
import random
import statistics

from agent.spec.record import Metric, ResultRecord
from agent.store.backends import open_store
from agent.store.keys import result_key
from coordinator.results.noise import noise_figures, processes_needed, resolvable_change
from coordinator.results.stats import Settings, runs_needed
from tests.conftest import hwmatrix

Z = 1.959964 + 0.841621          # two-sided 95% and 80% power, as stats.runs_needed


def _record(cell: str, hw_class: str, samples: dict[str, list[float]], sizes: list[int] | None,
            status: str = "ok", origin: str = "measured") -> dict:
    return ResultRecord(run_id="r1", matrix={"name": "m", "hash": "h"}, cell_id=cell, agent_id=f"agent-{hw_class}",
                        params={"ref": "A", "quant": cell}, status=status, hardware_class=hw_class, origin=origin,
                        hardware={"cpu": {"brand": "AMD Ryzen 9 7950X"}, "gpus": {"count": 0, "devices": []}},
                        engine={"kind": "llama.cpp", "commit": "abc1234" * 5},
                        metrics={m: Metric.from_samples(m[:2], s, process_sizes=sizes) for m, s in samples.items()},
                        timestamps={"finished": "2026-11-27T09:00:00"}).model_dump(mode="json")


def _store(tmp_path):
    """Class c1: three cells of 8 processes x 2 repetitions (CV about 4% and 8%); class c2: one
    cell of 12 single-repetition processes; plus records noise must leave out."""
    rng = random.Random(11)
    store = open_store((tmp_path / "store").as_uri())
    units: dict[tuple, list[list[float]]] = {}
    recs = []
    for hw_class, cells, procs, reps, cv in (("c1", ("q1", "q2", "q3"), 8, 2, 0.04), ("c2", ("q1",), 12, 1, 0.08)):
        for cell in cells:
            samples, means = {}, {}
            for metric, mean, k in (("pp_tps", 400.0, 1.0), ("tg_tps", 50.0, 2.0)):
                per = [rng.gauss(mean, mean * cv * k) for _ in range(procs)]
                samples[metric] = [round(p + rng.gauss(0, mean * 0.005), 4) for p in per for _ in range(reps)]
                means[metric] = [statistics.fmean(samples[metric][i * reps:(i + 1) * reps]) for i in range(procs)]
                units.setdefault((hw_class, metric), []).append(means[metric])
            recs.append(_record(f"{hw_class}-{cell}", hw_class, samples, [reps] * procs))
    noise_free = {"tg_tps": [1.0, 1000.0, 1.0, 1000.0]}
    recs += [_record("old", "c1", noise_free, None),                                  # processes not recorded
             _record("imp", "c1", noise_free, [1] * 4, origin="imported"),
             _record("bad", "c1", noise_free, [1] * 4, status="run_failed")]
    for rec in recs:
        store.put(result_key("r1", rec["cell_id"], rec["agent_id"]), ResultRecord(**rec).model_dump_json().encode())
    return store, units


def _expected(cells: list[list[float]]) -> tuple[float, int, int]:
    """(pooled CV, processes, processes per cell) computed from the process means."""
    ss = sum((len(u) - 1) * (statistics.stdev(u) / statistics.fmean(u)) ** 2 for u in cells)
    df = sum(len(u) - 1 for u in cells)
    return math.sqrt(ss / df), sum(map(len, cells)), len(cells[0])


def test_hwmatrix_noise_prints_each_class_and_metrics_cv_and_what_it_resolves(tmp_path):
    store, units = _store(tmp_path)
    result = hwmatrix("noise", "--store", store.url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["class", "metric", "cells", "processes"]
    for (hw_class, metric), cells in units.items():
        cv, processes, n = _expected(cells)
        at10 = max(0.02, Z * cv * math.sqrt(2 / 10))
        at_n = max(0.02, Z * cv * math.sqrt(2 / n))
        need = max(3, math.ceil(2 * Z ** 2 * cv ** 2 / 0.05 ** 2))
        row = next(line for line in lines if line.split()[:2] == [hw_class, metric]).split()
        assert row[2:] == [str(len(cells)), str(processes), f"{cv * 100:.1f}%", f"±{at10 * 100:.1f}%",
                           f"±{at_n * 100:.1f}%", f"(n={n})", str(need)], row
    assert len([line for line in lines if line.startswith(("c1 ", "c2 "))]) == 4
    assert "1 record metric(s) without engine processes left out" in result.stdout


def test_noise_of_one_class_and_an_empty_selection(tmp_path):
    store, _ = _store(tmp_path)
    result = hwmatrix("noise", "--store", store.url, "--class", "c2", "-n", "20")
    assert result.returncode == 0, result.stderr
    assert "resolves at n=20" in result.stdout and "c1 " not in result.stdout
    empty = hwmatrix("noise", "--store", (tmp_path / "nothing").as_uri())
    assert empty.returncode == 2 and "no measured ok records" in empty.stderr


def test_processes_needed_is_runs_needed_at_one_cv_and_inverts_the_resolvable_change():
    rng = random.Random(2)
    a = [rng.gauss(100, 5) for _ in range(10)]
    cv = statistics.stdev(a) / statistics.fmean(a)
    for change in (0.03, 0.05, 0.1):
        assert processes_needed(cv, change) == runs_needed(a, a, effect=change)
        n = processes_needed(cv, change)
        assert resolvable_change(cv, n) <= change < resolvable_change(cv, max(2, n - 1)) or n == 3
    assert processes_needed(cv, 0.01) is None                      # below min_effect: never called
    assert resolvable_change(0.0001, 10) == Settings().min_effect


def test_records_without_samples_or_processes_give_no_figure():
    rec = _record("x", "c1", {"tg_tps": [1.0, 2.0]}, None)
    figures = noise_figures([rec])
    assert figures == [] or all(f.processes == 0 for f in figures)
