"""Records -> what every report format shows: class names, per-(class, cell) summaries,
the cross-hardware pivot and the sweep-bench curves.

Built in one pass over the records, so a 100,000-record report costs one aggregation
whatever the format; repeated runs of a cell on a class are pooled from (n, mean, sd),
which equals the mean and sd of all their samples without touching the samples again.

Replicated cells (one cell measured by two agents of one class, coordinator/results/crosscheck.py)
are still pooled, but a pair that disagrees marks the pooled value with CHECK_FLAG, and the
pairs are listed in ``Report.checks``.

Stored objects that were no usable record (coordinator.results.record_check, skipped when read) are
listed in ``Report.skipped``: a report shows that something was left out, and what.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from agent.spec.record import HardwarePart
from coordinator.matrix.display import display
from coordinator.reports.busy import Busy
from coordinator.results.crosscheck import check_records
from coordinator.results.numbers import fmt_p

METRIC_ORDER = ("pp_tps", "tg_tps", "pg_tps")
METRIC_TITLES = {"pp_tps": "pp t/s", "tg_tps": "tg t/s", "pg_tps": "pp+tg t/s"}
# Same prefixes compare-llama-bench.py strips, so names read the way llama.cpp users post them.
GPU_NAME_STRIP = ("NVIDIA GeForce ", "NVIDIA ", "Tesla ", "AMD Radeon ")
# appended to a pooled value when two agents' replicas of that cell disagree beyond noise
CHECK_FLAG = " !"
CHECK_ORDER = {"disagree": 0, "unknown": 1, "agree": 2}


def _sortable(value) -> tuple:
    """Numbers in numeric order, before text, so threads 2 < 16 and cells read in a stable order."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, display(value))


def params_key(params: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def gpu_summary(names: list[str]) -> str:
    """'2x RTX 3090 + A4500' from a device list, in first-seen order."""
    counts = Counter()
    for name in names:
        for prefix in GPU_NAME_STRIP:
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        counts[name] += 1
    return " + ".join(f"{n}x {name}" if n > 1 else name for name, n in counts.items())


def class_name(record: dict) -> str:
    """What a reader recognises: the posted label for imports; CPU + GPUs + short class hash
    for measured boxes (two classes can share a CPU and differ in RAM, hence the hash).
    Once per class, so its hardware is read typed."""
    hw = HardwarePart.model_validate(record.get("hardware") or {})
    hw_class = record.get("hardware_class") or "unknown"
    if record.get("origin") == "imported" or "label" in hw.model_fields_set:
        return str(hw.label or hw_class)
    brand = (hw.cpu and hw.cpu.brand or "unknown CPU").strip()
    gpus = gpu_summary([d.name for d in hw.gpus.devices] if hw.gpus else [])
    name = f"{brand} + {gpus}" if gpus else brand
    return f"{name} ({hw_class[:6]})"


@dataclass
class Pooled:
    """Running n / mean / sum of squared deviations (Chan et al.), fed per record or per value.

    A single part keeps its own sd: an imported mean ± sd with an unknown repetition count
    (n = 0, weighted as 1) must still show the sd its poster gave."""
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    test: str | None = None
    parts: int = 0
    first_sd: float | None = None
    flag: str = ""          # CHECK_FLAG when replicas of this value disagree

    def add(self, n: int, mean: float, sd: float | None) -> None:
        n = max(int(n), 1)
        self.parts += 1
        if self.parts == 1:
            self.first_sd = sd
        m2 = (sd or 0.0) ** 2 * (n - 1)
        total = self.n + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.n * n / total
        self.n = total

    @property
    def sd(self) -> float:
        if self.parts == 1 and self.first_sd is not None:
            return float(self.first_sd)
        return math.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else 0.0

    def text(self) -> str:
        return f"{self.mean:.2f} ± {self.sd:.2f}{self.flag}" if self.n else "-"


def metric_stats(metric: dict) -> tuple[int, float, float | None] | None:
    """(n, mean, sd) of a stored metric, recomputed from samples when the summary is missing."""
    samples = metric.get("samples") or []
    n = metric.get("n") or len(samples)      # 0: a posted mean with an unknown repetition count
    mean = metric.get("mean")
    if mean is None and samples:
        mean = math.fsum(samples) / len(samples)
    if mean is None or (isinstance(mean, float) and not math.isfinite(mean)):
        return None
    sd = metric.get("sd")
    if sd is None and len(samples) > 1:
        sd = math.sqrt(math.fsum((s - mean) ** 2 for s in samples) / (len(samples) - 1))
    return n, float(mean), sd


@dataclass
class CellSummary:
    """All records of one cell on one hardware class."""
    hardware_class: str
    params: dict
    records: int = 0
    statuses: Counter = field(default_factory=Counter)
    metrics: dict[str, Pooled] = field(default_factory=dict)
    busy: Busy = field(default_factory=Busy)     # processes that ran on a busy machine

    def status_text(self) -> str:
        """'ok' when every run is ok, else the count of each status ('29 ok, 1 run_failed'); then
        how many processes ran on a busy machine ('ok, 3/10 busy')."""
        text = "ok" if set(self.statuses) == {"ok"} else ", ".join(f"{n} {s}" for s, n in sorted(self.statuses.items()))
        return f"{text}, {self.busy.mark()}" if self.busy.disturbed else text


@dataclass
class Report:
    classes: dict[str, str]                              # class id -> display name, sorted by name
    origins: dict[str, str]                              # class id -> measured | imported
    axes: list[str]                                      # every param key, first-seen order
    varying: list[str]                                   # the keys whose value differs between cells
    cells: dict[tuple, dict]                             # params key -> params, sorted
    summaries: dict[tuple[str, tuple], CellSummary]      # (class, params key) -> summary
    sweeps: dict[tuple, dict]                            # params-without-ref key -> {"params", "series"}
    comparisons: list[dict]
    metrics: list[str]
    n_records: int
    checks: list[dict] = field(default_factory=list)     # crosscheck.check_records rows, disagreements first
    skipped: list = field(default_factory=list)          # coordinator.results.index.Skipped (key, reason), in key order

    def label(self, params: dict, skip: tuple = ()) -> str:
        keys = [k for k in (self.varying or self.axes) if k not in skip and k in params]
        return " ".join(f"{k}={display(params[k])}" for k in keys) or "all"

    def class_cells(self, hw_class: str) -> list[CellSummary]:
        return [self.summaries[(hw_class, key)] for key in self.cells if (hw_class, key) in self.summaries]

    def pivot_cells(self, metric: str) -> tuple[list[tuple], dict[str, list[Pooled | None]]]:
        """The cells measured for ``metric`` on any class, and per class its pooled value per cell."""
        keys = [k for k in self.cells if any((c, k) in self.summaries and metric in self.summaries[(c, k)].metrics
                                             for c in self.classes)]
        values = {}
        for hw_class in self.classes:
            row = []
            for k in keys:
                summary = self.summaries.get((hw_class, k))
                row.append(summary.metrics.get(metric) if summary else None)
            values[hw_class] = row
        return keys, values

    def pivot(self, metric: str) -> tuple[list[str], list[list[str]]]:
        """Rows: hardware classes; columns: cells; values: mean ± sd (pooled over runs)."""
        keys, values = self.pivot_cells(metric)
        headers = ["hardware class", *(self.label(self.cells[k]) for k in keys)]
        rows = [[self.classes[c], *(p.text() if p else "-" for p in row)] for c, row in values.items()]
        return headers, rows

    def class_display(self, hw_class: str | None) -> str:
        return self.classes.get(hw_class or "", hw_class or "-")


def _sweep_series(record: dict, series: dict) -> None:
    """Fold one record's sweep rows into {n_kv: (Pooled S_PP, Pooled S_TG)} (rows of all reps)."""
    for row in record.get("sweep_rows") or []:
        n_kv = row.get("n_kv")
        if n_kv is None:
            continue
        pp, tg = series.setdefault(int(n_kv), (Pooled(), Pooled()))
        if row.get("speed_pp") is not None:
            pp.add(1, float(row["speed_pp"]), None)
        if row.get("speed_tg") is not None:
            tg.add(1, float(row["speed_tg"]), None)


def build(records: list[dict], comparisons: list[dict] | None = None, skipped: list | None = None) -> Report:
    """One pass: class names, axes, pooled per-(class, cell) metrics, sweep curves.
    ``records`` are checked ones (coordinator.results.records); ``skipped`` what was left out."""
    names: dict[str, str] = {}
    origins: dict[str, str] = {}
    axes: list[str] = []
    seen_axes: set[str] = set()
    values: dict[str, set] = {}
    cells: dict[tuple, dict] = {}
    summaries: dict[tuple[str, tuple], CellSummary] = {}
    sweeps: dict[tuple, dict] = {}
    metric_names: set[str] = set()
    for rec in records:
        hw_class = rec.get("hardware_class") or "unknown"
        if hw_class not in names:
            names[hw_class] = class_name(rec)
            origins[hw_class] = rec.get("origin") or "measured"
        params = rec.get("params") or {}
        for k, v in params.items():
            if k not in seen_axes:
                seen_axes.add(k)
                axes.append(k)
            values.setdefault(k, set()).add(repr(v))
        key = params_key(params)
        cells.setdefault(key, params)
        summary = summaries.get((hw_class, key))
        if summary is None:
            summary = summaries[(hw_class, key)] = CellSummary(hw_class, params)
        summary.records += 1
        summary.statuses[rec.get("status") or "unknown"] += 1
        summary.busy.add(rec)
        for name, metric in (rec.get("metrics") or {}).items():
            stats = metric_stats(metric)
            if stats is None:
                continue
            metric_names.add(name)
            pooled = summary.metrics.get(name)
            if pooled is None:
                pooled = summary.metrics[name] = Pooled(test=metric.get("test"))
            pooled.add(*stats)
        if rec.get("sweep_rows"):
            rest = {k: v for k, v in params.items() if k != "ref"}
            entry = sweeps.setdefault(params_key(rest), {"params": rest, "series": {}})
            series = entry["series"].setdefault((str(params.get("ref", "-")), hw_class), {})
            _sweep_series(rec, series)
    varying = [k for k in axes if len(values[k]) > 1]
    order = varying or axes
    sorted_cells = dict(sorted(cells.items(),
                               key=lambda kv: tuple(_sortable(kv[1].get(a)) for a in order)))
    classes = dict(sorted(names.items(), key=lambda kv: (origins[kv[0]] == "imported", kv[1])))
    metrics = [m for m in METRIC_ORDER if m in metric_names] + sorted(metric_names - set(METRIC_ORDER))
    checks = sorted(check_records(records), key=lambda c: CHECK_ORDER.get(c["verdict"], 1))
    for c in checks:
        if c["verdict"] != "disagree":
            continue
        summary = summaries.get((c["hardware_class"], params_key(c["params"])))
        for m in c.get("metrics") or []:
            if summary and m.get("verdict") == "disagree" and m["metric"] in summary.metrics:
                summary.metrics[m["metric"]].flag = CHECK_FLAG
    return Report(classes=classes, origins=origins, axes=axes, varying=varying, cells=sorted_cells,
                  summaries=summaries, sweeps=sweeps, comparisons=list(comparisons or []),
                  metrics=metrics, n_records=len(records), checks=checks, skipped=list(skipped or []))


CORRECTIONS = {"holm": "Holm (family-wise error rate)", "bh": "Benjamini-Hochberg (false discovery rate)"}


def correction_name(comparisons: list[dict], default: str) -> str:
    """The correction a comparison says it used, else the caller's setting, spelled out."""
    method = next((c["correction"] for c in comparisons if c.get("correction")), default)
    return CORRECTIONS.get(str(method).lower(), str(method))


def fmt_ratio(c: dict) -> str:
    if c.get("ratio") is None:
        return "-"
    if c.get("ci_low") is None or c.get("ci_high") is None:
        return f"{c['ratio']:.3f}"
    return f"{c['ratio']:.3f} [{c['ci_low']:.3f}, {c['ci_high']:.3f}]"


def comparison_cells(report: Report, c: dict) -> list[str]:
    """One A/B row as text, shared by the markdown and HTML tables."""
    n = f"{c.get('n_base') or '-'}/{c.get('n_cand') or '-'}"
    return [report.class_display(c.get("hardware_class")), str(c.get("cell") or "-"),
            METRIC_TITLES.get(c.get("metric"), str(c.get("metric"))),
            f"{c.get('baseline')} → {c.get('candidate')}", fmt_ratio(c), fmt_p(c.get("p_value")),
            fmt_p(c.get("p_adjusted")), str(c.get("test") or "-"), str(c.get("verdict") or "-"), n,
            "-" if c.get("more_runs") in (None, 0) else str(c["more_runs"])]


def comparison_headers(ci_level: float) -> list[str]:
    return ["hardware class", "cell", "metric", "baseline → candidate", f"ratio [{ci_level:.0%} CI]", "p",
            "p adj", "test", "verdict", "n base/cand", "more runs"]


def check_counts(report: Report) -> dict[str, int]:
    counts = Counter(c["verdict"] for c in report.checks)
    return {v: counts.get(v, 0) for v in ("disagree", "unknown", "agree")}


def check_headline(report: Report) -> str:
    """One sentence for the top of a report with replicated cells ('' without any)."""
    if not report.checks:
        return ""
    n = check_counts(report)
    text = (f"Cross-checks: {len(report.checks)} replicated cell pair(s): {n['disagree']} disagree, "
            f"{n['unknown']} unknown, {n['agree']} agree.")
    if n["disagree"]:
        text += f" Values marked '{CHECK_FLAG.strip()}' pool replicas that disagree; see Cross-checks."
    return text


SKIPPED_SHOWN = 100     # skip notes listed in a report; the rest are counted


def skipped_headline(report: Report) -> str:
    """One sentence for the top of a report that left stored objects out ('' without any)."""
    if not report.skipped:
        return ""
    return (f"{len(report.skipped)} stored object(s) are not usable records and are left out; "
            "see Skipped records.")


def skipped_lines(report: Report) -> list[str]:
    """`key: why` per skipped object (key shown escaped), the first SKIPPED_SHOWN of them."""
    lines = [s.note().removeprefix("skipped ") for s in report.skipped[:SKIPPED_SHOWN]]
    if len(report.skipped) > SKIPPED_SHOWN:
        lines.append(f"... and {len(report.skipped) - SKIPPED_SHOWN} more")
    return lines


def check_headers() -> list[str]:
    return ["verdict", "hardware class", "cell", "run", "agents", "detail"]


def _agent_text(agent: str, fingerprint) -> str:
    return f"{agent} (key {str(fingerprint)[:16]})" if fingerprint else agent


def check_cells(report: Report, c: dict) -> list[str]:
    """One cross-check row as text, shared by the markdown and HTML tables."""
    fps = c.get("fingerprints") or [None, None]
    agents = " vs ".join(_agent_text(a, f) for a, f in zip(c.get("agents") or [], fps))
    verdict = "DISAGREE" if c["verdict"] == "disagree" else c["verdict"]
    return [verdict, report.class_display(c.get("hardware_class")), report.label(c.get("params") or {}),
            str(c.get("run_id") or "-"), agents, str(c.get("detail") or "")]


def check_rows(report: Report) -> list[list[str]]:
    """Disagreements, then unknowns; agreements are only counted (check_note)."""
    return [check_cells(report, c) for c in report.checks if c["verdict"] != "agree"]


CHECK_NOTE = ("The same cell was measured by two agents of one hardware class. disagree = the difference "
              "is significant (Holm-adjusted p < 0.05 on per-process means) AND larger than the 10% "
              "tolerance; agree = the 95% CI of the ratio lies within the tolerance; unknown = too few "
              "engine processes, too noisy, or a record not ok. A disagreement says the two machines do not "
              "measure alike (cooling, RAM, background load, a misreporting agent), not which one is off, "
              "and is not a regression: both ran the same build.")
