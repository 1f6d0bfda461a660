"""A/B pairing: candidate vs baseline records of the same cell on the same hardware class.

Never across classes: a record is only ever compared with a record of the same hardware
class. Imported records (someone's pasted numbers) get a ratio but no verdict.
"""
from __future__ import annotations

from dataclasses import replace

from agent.spec.record import process_means
from coordinator.results.stats import Comparison, Settings, compare, compare_many, compare_sequential, ratio_note

METRICS = ("pp_tps", "tg_tps")


def _other_params(params: dict, axis: str) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items() if k != axis))


def _label(params: dict, axis: str) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items() if k not in (axis, "model"))


def pair_records(records: list[dict], baseline: dict, candidate: dict) -> list[tuple[dict, dict]]:
    """(baseline record, candidate record) pairs: equal params except the compared axis,
    same hardware class, both ok. ``baseline``/``candidate`` are one-axis dicts like {"ref": "a"}."""
    (axis, base_value), = baseline.items()
    (_, cand_value), = candidate.items()
    ok = [r for r in records if r.get("status") == "ok"]
    bases = {}
    for rec in ok:
        if rec["params"].get(axis) == base_value:
            bases[(rec.get("hardware_class"), _other_params(rec["params"], axis))] = rec
    pairs = []
    for rec in ok:
        if rec["params"].get(axis) == cand_value:
            base = bases.get((rec.get("hardware_class"), _other_params(rec["params"], axis)))
            if base is not None:
                pairs.append((base, rec))
    return pairs


def _same_binary(base: dict, cand: dict) -> bool:
    """One binary run with the same settings: nothing to test. Cells that differ in a run-time
    setting (rtr, threads) share a binary and are still compared."""
    digest = base.get("engine", {}).get("binary_hash")
    return (digest is not None and digest == cand.get("engine", {}).get("binary_hash")
            and _other_params(base.get("params", {}), "ref") == _other_params(cand.get("params", {}), "ref"))


def units(metric: dict) -> list[float]:
    """What the statistics count as one sample: one engine process (the mean of its
    repetitions), since repetitions inside a process share its luck."""
    return process_means(metric.get("samples") or [], metric.get("process_sizes"))


def stopped_on_verdicts(base: dict, cand: dict) -> dict | None:
    """The candidate's repetitions when both sides measured under ``until: verdict`` in one run
    (their processes ran as interleaved pairs, and stopped when the sequential rule settled),
    else None: records of two runs were never paired, so they get a fresh test."""
    reps = [r.get("repetitions") or {} for r in (base, cand)]
    same_run = base.get("run_id") == cand.get("run_id")
    return reps[1] if same_run and all(r.get("until") == "verdict" for r in reps) else None


def judge(triples: list[tuple[dict, dict, str]], settings: Settings = Settings()) -> list[Comparison]:
    """A Comparison per (baseline record, candidate record, metric), all with samples.
    Identical binaries are "same binary" outright, and cells measured ``until: verdict`` get
    the sequential rule's verdict on their pairs (the one that stopped them: it holds under
    optional stopping); neither takes part in the correction."""
    out: list[Comparison | None] = [None] * len(triples)
    fresh = []
    for i, (base, cand, metric) in enumerate(triples):
        b, c = units(base["metrics"][metric]), units(cand["metrics"][metric])
        sequential = stopped_on_verdicts(base, cand)
        if _same_binary(base, cand):
            out[i] = compare(b, c, metric, settings, same_binary=True)
        elif sequential is not None:
            margin = replace(settings, equivalence=sequential.get("equivalence_pct", 100 * settings.equivalence) / 100)
            out[i] = compare_sequential(b, c, metric, margin, max_pairs=sequential.get("max"),
                                        min_pairs=sequential.get("min") or 3)
        else:
            fresh.append((i, b, c, metric))
    for (i, *_), result in zip(fresh, compare_many([(b, c, m) for _, b, c, m in fresh], settings)):
        out[i] = result
    for (base, cand, metric), result in zip(triples, out):
        if not all(r["metrics"][metric].get("process_sizes") for r in (base, cand)):
            result.warnings.append("engine processes not recorded: repetitions counted as independent")
    return out


def comparisons(records: list[dict], baseline: dict, candidate: dict,
                settings: Settings = Settings(), metrics=METRICS, pairs=None) -> list[dict]:
    """One dict per (pair, metric), with multiple-comparison control across all of them.
    ``pairs``: (baseline, candidate) records chosen by the caller instead of pair_records'."""
    (axis, base_value), = baseline.items()
    (_, cand_value), = candidate.items()
    tested, rows = [], []
    for base, cand in pair_records(records, baseline, candidate) if pairs is None else pairs:
        for metric in metrics:
            b, c = base.get("metrics", {}).get(metric), cand.get("metrics", {}).get(metric)
            if not b or not c:
                continue
            row = {"cell": _label(cand["params"], axis),
                   "params": {k: v for k, v in cand["params"].items() if k != axis},
                   "hardware_class": cand.get("hardware_class"), "metric": metric,
                   "baseline": base_value, "candidate": cand_value}
            imported = "imported" in (base.get("origin"), cand.get("origin"))
            if imported or not b.get("samples") or not c.get("samples"):
                ratio = (c["mean"] / b["mean"]) if b.get("mean") and c.get("mean") else None
                row.update(ratio=ratio, ci_low=None, ci_high=None, p_value=None, p_adjusted=None, test=None,
                           verdict="not compared", n_base=b.get("n"), n_cand=c.get("n"),
                           warnings=["imported numbers: shown, never tested"] if imported
                           else ["no per-repetition samples"], more_runs=None)
                rows.append(row)
                continue
            tested.append((row, (base, cand, metric)))
            rows.append(row)
    for (row, _), result in zip(tested, judge([t for _, t in tested], settings)):
        row.update({k: getattr(result, k) for k in ("ratio", "ci_low", "ci_high", "p_value", "p_adjusted", "test",
                                                    "verdict", "n_base", "n_cand", "more_runs")},
                   warnings=list(result.warnings))
    return rows


def render_comparisons(rows: list[dict], settings: Settings) -> str:
    """GitHub markdown: one row per cell, class and metric, then how the verdicts were made."""
    from tabulate import tabulate

    table = []
    for r in rows:
        ci = f" [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r.get("ci_low") is not None else ""
        ratio = f"{r['ratio']:.3f}{ci}" if r.get("ratio") is not None else "-"
        p = f"{r['p_adjusted']:.3g}" if r.get("p_adjusted") is not None else "-"
        notes = "; ".join(r.get("warnings") or [])
        if r.get("more_runs"):
            notes = (notes + "; " if notes else "") + f"~{r['more_runs']} runs per side would likely settle it"
        table.append([r["cell"], r["hardware_class"], r["metric"], f"{r.get('n_base')}/{r.get('n_cand')}",
                      ratio, p, r.get("test") or "-", f"**{r['verdict']}**", notes])
    headers = ["cell", "class", "metric", "n (base/cand)", "ratio cand/base [95% CI]", "p (adj.)", "test",
               "verdict", "notes"]
    text = tabulate(table, headers=headers, tablefmt="pipe", disable_numparse=True)
    tested = sum(r.get("p_value") is not None for r in rows)
    correction = {"holm": "Holm", "bh": "Benjamini-Hochberg"}.get(settings.correction, settings.correction)
    return (f"{text}\n\nRatios > 1 are faster (tokens/s). n counts engine processes, the statistical unit "
            "(each the mean of its repetitions; A and B processes were interleaved on one machine). "
            f"{ratio_note(settings.estimator)}. "
            f"Test: {settings.test} (per row); sequential: cells measured until: verdict, judged by the "
            "anytime-valid confidence sequence on their interleaved pairs that stopped them (valid under "
            f"optional stopping, outside the correction). Multiple-comparison control: {correction} across {tested} "
            f"comparisons. Verdicts need p < {settings.alpha} and |change| >= {settings.min_effect:.0%} "
            f"(slower/faster), or a CI inside ±{settings.equivalence:.0%} (same); otherwise unknown. "
            "Records are only compared within one hardware class.")
