"""The comparison table printed at the end of a run (GitHub markdown via tabulate "pipe").

One row per cell (and hardware class), pp and tg tokens/s as mean +- sd over the
repetitions, and the change against the matrix's baseline cell with the same other params
on the same hardware class, with its verdict (coordinator.results.stats; Holm across the table).
"""
from __future__ import annotations

from tabulate import tabulate

from agent.spec.record import HardwarePart
from coordinator.matrix.display import display as _display

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


def _verdicts(pairs: list[tuple[dict, dict, str]]) -> list[str | None]:
    """Verdict per (baseline record, record, metric), corrected across the whole table."""
    from coordinator.results.compare import judge

    has = [bool(b.get("metrics", {}).get(m, {}).get("samples") and r.get("metrics", {}).get(m, {}).get("samples"))
           for b, r, m in pairs]
    judged = iter(judge([p for p, ok in zip(pairs, has) if ok]))
    return [next(judged).verdict if ok else None for ok in has]


def _key(params: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


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


def comparison_table(cells: list[dict], records: dict[str, list[dict]], baseline: dict | None,
                     not_run: dict[str, str] | None = None) -> str:
    """``cells``: [{cell_id, params}] in plan order; ``records``: cell_id -> its records;
    ``not_run``: cell_id -> why a cell without records was not run (else it shows "missing").
    One row per cell; one column group per hardware class (values, change, status)."""
    columns: list[str] = []
    for cell in cells:
        for k in cell["params"]:
            if k not in columns:
                columns.append(k)
    varying = [k for k in columns if len({repr(c["params"].get(k)) for c in cells}) > 1] or columns[:1]
    by_params = {_key(c["params"]): c["cell_id"] for c in cells}
    classes = sorted({r.get("hardware_class") for recs in records.values() for r in recs
                      if r.get("hardware_class")}) or [None]

    def record_of(cell_id: str | None, hw_class: str | None) -> dict | None:
        """The cell's record on this class, an ok one first."""
        recs = [r for r in records.get(cell_id or "", []) if hw_class is None or r.get("hardware_class") == hw_class]
        return next((r for r in recs if r.get("status") == "ok"), recs[0] if recs else None)

    rows, pairs, slots = [], [], []
    for cell in cells:
        base_id = by_params.get(_key({**cell["params"], **baseline})) if baseline else None
        row = [_display(cell["params"].get(k)) for k in varying]
        tests = next((" / ".join(m["test"] for m in r["metrics"].values())
                      for r in records.get(cell["cell_id"], []) if r.get("metrics")), "-")
        row.append(tests)
        for hw_class in classes:
            rec = record_of(cell["cell_id"], hw_class)
            metrics = (rec or {}).get("metrics", {})
            base_rec = record_of(base_id, hw_class) if base_id and base_id != cell["cell_id"] else None
            for name in METRICS:
                row.append(_fmt(metrics.get(name)))
            for name in METRICS:
                if base_id == cell["cell_id"]:
                    row.append("baseline")
                    continue
                if base_rec and rec and base_rec.get("status") == "ok" and rec.get("status") == "ok":
                    slots.append((len(rows), len(row)))
                    pairs.append((base_rec, rec, name))
                row.append((metrics.get(name), (base_rec or {}).get("metrics", {}).get(name)))
            row.append(rec["status"] if rec else (not_run or {}).get(cell["cell_id"], "missing"))
        rows.append(row)
    verdicts = dict(zip(slots, _verdicts(pairs))) if pairs else {}
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            if isinstance(value, tuple):
                row[c] = _change(value[0], value[1], verdicts.get((r, c)))
    group = ["pp t/s", "tg t/s", "Δ pp", "Δ tg", "status"]
    if len(classes) > 1:
        headers = [*varying, "test"] + [f"{_class_label(c, records)} {h}" for c in classes for h in group]
    else:
        headers = [*varying, "test", *group]
    align = ["left"] * (len(varying) + 1) + (["right"] * 4 + ["left"]) * len(classes)
    return tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True, colalign=align)
