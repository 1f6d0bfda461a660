"""The comparison table printed at the end of a run (GitHub markdown via tabulate "pipe").

One row per cell (and hardware class), pp and tg tokens/s as mean +- sd over the
repetitions, and the change against the matrix's baseline cell with the same other params.
"""
from __future__ import annotations

from tabulate import tabulate

METRICS = ("pp_tps", "tg_tps")


def _fmt(metric: dict | None) -> str:
    if not metric or metric.get("mean") is None:
        return "-"
    return f"{metric['mean']:.2f} ± {metric['sd'] or 0:.2f}"


def _change(metric: dict | None, base: dict | None) -> str:
    if not metric or not base or not metric.get("mean") or not base.get("mean"):
        return "-"
    return f"{(metric['mean'] / base['mean'] - 1) * 100:+.1f}%"


def _key(params: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def comparison_table(cells: list[dict], records: dict[str, list[dict]], baseline: dict | None,
                     not_run: dict[str, str] | None = None) -> str:
    """``cells``: [{cell_id, params}] in plan order; ``records``: cell_id -> its records;
    ``not_run``: cell_id -> why a cell without records was not run (else it shows "missing")."""
    columns: list[str] = []
    for cell in cells:
        for k in cell["params"]:
            if k not in columns:
                columns.append(k)
    varying = [k for k in columns if len({repr(c["params"].get(k)) for c in cells}) > 1] or columns[:1]
    by_params = {_key(c["params"]): c["cell_id"] for c in cells}
    classes = {r.get("hardware_class") for recs in records.values() for r in recs}
    show_class = len(classes) > 1

    rows = []
    for cell in cells:
        base_id = None
        if baseline:
            wanted = {**cell["params"], **baseline}
            base_id = by_params.get(_key(wanted))
        for rec in records.get(cell["cell_id"], []) or [None]:
            metrics = (rec or {}).get("metrics", {})
            base_rec = None
            if base_id and rec is not None:
                base_rec = next((b for b in records.get(base_id, [])
                                 if b.get("hardware_class") == rec.get("hardware_class")), None)
            row = [_display(cell["params"].get(k)) for k in varying]
            if show_class:
                row.append((rec or {}).get("hardware_class", "-"))
            tests = " / ".join(m["test"] for m in metrics.values()) if metrics else "-"
            row.append(tests)
            for name in METRICS:
                row.append(_fmt(metrics.get(name)))
            for name in METRICS:
                if base_id == cell["cell_id"]:
                    row.append("baseline")
                else:
                    row.append(_change(metrics.get(name), (base_rec or {}).get("metrics", {}).get(name)))
            row.append(rec["status"] if rec else (not_run or {}).get(cell["cell_id"], "missing"))
            rows.append(row)
    headers = [*varying, *(["class"] if show_class else []), "test", "pp t/s", "tg t/s",
               "Δ pp", "Δ tg", "status"]
    align = ["left"] * (len(headers) - 5) + ["right"] * 4 + ["left"]
    return tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True, colalign=align)


def _display(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)
