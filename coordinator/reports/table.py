"""The comparison table printed at the end of a run (GitHub markdown via tabulate "pipe").

One row per cell (and hardware class), pp and tg tokens/s as mean +- sd over the
repetitions, and per comparison of the matrix a Δ column pair named by its baseline: the
change against the cell with the baseline's values and the same other params on the same
hardware class, with its verdict (coordinator.results.stats; Holm across the whole table).
Under it, per class and metric, the class's noise figure (coordinator.results.noise) and,
where verdicts are unknown, about how many processes would settle them; and per cell whose
processes ran on a busy machine (agent.machine.quiet), what was seen - its status says
"3/10 busy".
"""
from __future__ import annotations

from tabulate import tabulate

from agent.spec.record import HardwarePart
from coordinator.matrix.display import display as _display
from coordinator.planning.plan import baseline_ids
from coordinator.reports.busy import busy_of
from coordinator.results.compare import judge
from coordinator.results.noise import figure_line, noise_figures
from coordinator.results.stats import Comparison

METRICS = ("pp_tps", "tg_tps")


def _fmt(metric: dict | None) -> str:
    if not metric or metric.get("mean") is None:
        return "-"
    return f"{metric['mean']:.2f} ± {metric['sd'] or 0:.2f}"


def _change(metric: dict | None, base: dict | None, verdict: str | None) -> str:
    if not metric or not base or not metric.get("mean") or not base.get("mean"):
        return "-"
    change = f"{(metric['mean'] / base['mean'] - 1) * 100:+.1f}%"
    return f"{change} {verdict}" if verdict else change


def _judged(pairs: list[tuple[dict, dict, str]]) -> list[Comparison | None]:
    """Comparison per (baseline record, record, metric), corrected across the whole table
    (every comparison of the matrix); None where a side has no samples."""
    has = [bool(b.get("metrics", {}).get(m, {}).get("samples") and r.get("metrics", {}).get(m, {}).get("samples"))
           for b, r, m in pairs]
    judged = iter(judge([p for p, ok in zip(pairs, has) if ok]))
    return [next(judged) if ok else None for ok in has]


def _class_label(hw_class: str | None, records: dict[str, list[dict]]) -> str:
    """A short name for a column group: the CPU's uarch (and GPUs) and the class id."""
    for recs in records.values():
        for rec in recs:
            if rec.get("hardware_class") == hw_class and rec.get("hardware"):
                hw = HardwarePart.model_validate(rec["hardware"])
                uarch = hw.cpu.uarch if hw.cpu and hw.cpu.uarch is not None else "?"
                gpus = hw.gpus and hw.gpus.count or 0
                return f"{uarch}{f' {gpus}GPU' if gpus else ''} [{hw_class}]"
    return f"[{hw_class}]"


def baseline_label(baseline: dict) -> str:
    """How a Δ column names its baseline: a ref by its name, other axes as key=value."""
    return ",".join(_display(v) if k == "ref" else f"{k}={_display(v)}" for k, v in baseline.items())


def comparison_table(cells: list[dict], records: dict[str, list[dict]],
                     comparisons: list[tuple[dict, dict | None]],
                     not_run: dict[str, str] | None = None) -> str:
    """``cells``: [{cell_id, params}] in plan order; ``records``: cell_id -> its records;
    ``comparisons``: (baseline values, candidate values or None for every other cell) each;
    ``not_run``: cell_id -> why a cell without records was not run (else it shows "missing").
    One row per cell; one column group per hardware class (values, a Δ pair per comparison,
    status); the noise footer under it."""
    columns: list[str] = []
    for cell in cells:
        for k in cell["params"]:
            if k not in columns:
                columns.append(k)
    varying = [k for k in columns if len({repr(c["params"].get(k)) for c in cells}) > 1] or columns[:1]
    bases = [baseline_ids(cells, baseline, candidate) for baseline, candidate in comparisons] or [{}]
    is_base = [set(b.values()) for b in bases]       # no comparison: one Δ pair, "-" throughout
    classes = sorted({r.get("hardware_class") for recs in records.values() for r in recs
                      if r.get("hardware_class")}) or [None]

    def record_of(cell_id: str | None, hw_class: str | None) -> dict | None:
        """The cell's record on this class, an ok one first."""
        recs = [r for r in records.get(cell_id or "", []) if hw_class is None or r.get("hardware_class") == hw_class]
        return next((r for r in recs if r.get("status") == "ok"), recs[0] if recs else None)

    rows, pairs, slots, busy_lines = [], [], [], []
    for cell in cells:
        row = [_display(cell["params"].get(k)) for k in varying]
        tests = next((" / ".join(m["test"] for m in r["metrics"].values())
                      for r in records.get(cell["cell_id"], []) if r.get("metrics")), "-")
        row.append(tests)
        for hw_class in classes:
            rec = record_of(cell["cell_id"], hw_class)
            metrics = (rec or {}).get("metrics", {})
            for name in METRICS:
                row.append(_fmt(metrics.get(name)))
            for base_of, based in zip(bases, is_base):
                base_id = base_of.get(cell["cell_id"])
                base_rec = record_of(base_id, hw_class) if base_id else None
                for name in METRICS:
                    if cell["cell_id"] in based:
                        row.append("baseline")
                        continue
                    if base_rec and rec and base_rec.get("status") == "ok" and rec.get("status") == "ok":
                        slots.append((len(rows), len(row)))
                        pairs.append((base_rec, rec, name))
                    row.append((metrics.get(name), (base_rec or {}).get("metrics", {}).get(name)))
            busy = busy_of([rec] if rec else [])
            status = rec["status"] if rec else (not_run or {}).get(cell["cell_id"], "missing")
            row.append(f"{status}, {busy.mark()}" if busy.disturbed else status)
            if busy.disturbed:
                where = " ".join(f"{k}={_display(cell['params'].get(k))}" for k in varying)
                busy_lines.append(f"busy: {where}{f' [{hw_class}]' if hw_class else ''}: {busy.note()}")
        rows.append(row)
    results = _judged(pairs) if pairs else []
    judged = dict(zip(slots, results))
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            if isinstance(value, tuple):
                verdict = judged.get((r, c))
                row[c] = _change(value[0], value[1], verdict.verdict if verdict else None)
    group = ["pp t/s", "tg t/s"]
    for baseline, _ in comparisons:
        group += [f"Δ pp vs {baseline_label(baseline)}", f"Δ tg vs {baseline_label(baseline)}"]
    if not comparisons:
        group += ["Δ pp", "Δ tg"]
    group.append("status")
    if len(classes) > 1:
        headers = [*varying, "test"] + [f"{_class_label(c, records)} {h}" for c in classes for h in group]
    else:
        headers = [*varying, "test", *group]
    align = ["left"] * (len(varying) + 1) + (["right"] * (len(group) - 1) + ["left"]) * len(classes)
    table = tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True, colalign=align)
    footer = noise_footer(records, list(zip(pairs, results))) + busy_lines
    return table + ("\n\n" + "\n".join(footer) if footer else "")


def noise_footer(records: dict[str, list[dict]], judged: list[tuple[tuple[dict, dict, str], Comparison | None]]
                 ) -> list[str]:
    """Per class and metric: what the class resolves at n=10 and, under unknown verdicts,
    about how many processes a side would settle them (stats' estimate per row)."""
    unknown: dict[tuple, list[int]] = {}
    for (_, rec, metric), c in judged:
        if c is not None and c.verdict == "unknown" and c.more_runs is not None:
            unknown.setdefault((rec.get("hardware_class"), metric), []).append(
                min(c.n_base, c.n_cand) + c.more_runs)
    lines = []
    for f in noise_figures([r for recs in records.values() for r in recs]):
        if f.metric not in METRICS:
            continue
        line = f"noise [{f.hw_class}] {f.metric.split('_')[0]}: this class {figure_line(f)}"
        if need := sorted(unknown.get((f.hw_class, f.metric), [])):
            median = need[(len(need) - 1) // 2]
            line += (f"; {len(need)} unknown: about {median} processes a side would settle "
                     + ("it" if len(need) == 1 else "them") + (f" (up to {need[-1]})" if need[-1] != median else ""))
        lines.append(line)
    return lines
