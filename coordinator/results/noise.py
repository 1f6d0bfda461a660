"""The machine's noise figure: how much one engine process varies on a hardware class, and
so the smallest change the verdict rule can resolve there with n processes a side.

The unit is the engine process, as in every verdict (agent.spec.record.process_means). A
class's CV pools its cells' between-process CVs (each cell has its own mean, so cells are
never pooled raw): cv^2 = sum((n_i - 1) cv_i^2) / sum(n_i - 1). The resolvable change is
the inverse of stats.runs_needed (normal approximation, two-sided alpha, 80% power), and
never below the rule's min_effect: a smaller change is never called.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from coordinator.results.compare import units
from coordinator.results.stats import Settings, power_z, runs_needed_at

POWER = 0.8          # as stats.runs_needed, which estimates processes for "unknown" rows
REFERENCE_N = 10     # the processes per side the figure is quoted at
TARGET_CHANGE = 0.05


@dataclass(frozen=True)
class Noise:
    """One (hardware class, metric): its cells, processes and pooled between-process CV."""
    hw_class: str | None
    metric: str
    cells: int
    processes: int
    n_typical: int          # processes per cell as recorded (the median cell)
    cv: float
    left_out: int = 0       # records of the metric whose processes were not recorded


def resolvable_change(cv: float, n: int, settings: Settings = Settings(), power: float = POWER) -> float:
    """Smallest relative change called with ``power`` at n processes a side (a fraction)."""
    return max(settings.min_effect, power_z(settings.alpha, power) * cv * math.sqrt(2 / n))


def processes_needed(cv: float, change: float, settings: Settings = Settings(), power: float = POWER) -> int | None:
    """Processes a side to call ``change`` with ``power`` (stats.runs_needed's formula at one
    CV); None when the rule never calls a change that small (below min_effect)."""
    if change < settings.min_effect:
        return None
    return runs_needed_at(cv ** 2, change, settings.alpha, power)


def _process_cv(values: list[float]) -> float | None:
    if len(values) < 2 or not statistics.fmean(values):
        return None
    return statistics.stdev(values) / abs(statistics.fmean(values))


def noise_figures(records: list[dict]) -> list[Noise]:
    """Per (class, metric) of the measured ok records: the pooled between-process CV."""
    acc: dict[tuple, dict] = {}
    for rec in records:
        if rec.get("status") != "ok" or rec.get("origin", "measured") != "measured":
            continue
        for metric, m in (rec.get("metrics") or {}).items():
            if not isinstance(m, dict) or not m.get("samples"):
                continue
            a = acc.setdefault((rec.get("hardware_class"), metric), {"ss": 0.0, "df": 0, "ns": [], "left_out": 0})
            if not m.get("process_sizes"):
                a["left_out"] += 1
                continue
            values = units(m)
            cv = _process_cv(values)
            if cv is None:
                continue
            a["ss"] += (len(values) - 1) * cv ** 2
            a["df"] += len(values) - 1
            a["ns"].append(len(values))
    out = []
    for (hw_class, metric), a in sorted(acc.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        if a["df"]:
            out.append(Noise(hw_class, metric, len(a["ns"]), sum(a["ns"]), int(statistics.median_low(a["ns"])),
                             math.sqrt(a["ss"] / a["df"]), a["left_out"]))
    return out


def figure_line(noise: Noise, settings: Settings = Settings(), n: int = REFERENCE_N) -> str:
    """The footer's words for one class and metric: resolves ±X% at n=10 (process CV Y%)."""
    return (f"resolves ±{resolvable_change(noise.cv, n, settings) * 100:.1f}% at n={n} "
            f"(process CV {noise.cv * 100:.1f}%)")


def noise_table(figures: list[Noise], settings: Settings = Settings(), n: int = REFERENCE_N,
                change: float = TARGET_CHANGE) -> list[list]:
    """Rows for `hwmatrix noise`: class, metric, cells, processes, CV, ± at n, ± at the n
    recorded, processes a side for ``change``."""
    rows = []
    for f in figures:
        need = processes_needed(f.cv, change, settings)
        rows.append([f.hw_class or "-", f.metric, f.cells, f.processes, f"{f.cv * 100:.1f}%",
                     f"±{resolvable_change(f.cv, n, settings) * 100:.1f}%",
                     f"±{resolvable_change(f.cv, f.n_typical, settings) * 100:.1f}% (n={f.n_typical})",
                     need if need is not None else "-"])
    return rows


def noise_headers(n: int = REFERENCE_N, change: float = TARGET_CHANGE) -> list[str]:
    return ["class", "metric", "cells", "processes", "process CV", f"resolves at n={n}",
            "resolves at n recorded", f"processes for {change * 100:g}%"]
