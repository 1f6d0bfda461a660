"""Cross-checks: do two agents of one hardware class that measured the same cell agree?

A share of volunteer cells is replicated: the same cell (run_id, cell_id) is measured by a
second agent of the SAME hardware class. Two machines of one class are still two machines
(silicon lottery, cooling, RAM timings, background load), so they legitimately differ by a
few percent. A pair therefore only **disagrees** when the difference is BOTH statistically
significant (Holm-adjusted over the pair's metrics) AND larger than ``tolerance`` (the faster
side more than 10% above the slower at the default). It **agrees** when the CI of
the ratio (stats.compare's: Yuen's, of the 20% trimmed means) lies inside the tolerance band; anything else (too few engine processes, too
noisy, a failed record) is **unknown**, with the reason in words. A pair that cannot be
compared because a record is malformed (not a record, samples that are text or NaN: see
coordinator.results.record_check) **disagrees**: an agent must not escape the check by sending junk.

A disagreement says "these two machines do not measure the same", never which one is
wrong, and is never a regression: both ran the same build of the same cell.

The statistical unit is the engine process (agent.spec.record.process_means), as in `compare`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

from agent.spec.printable import printable
from agent.spec.record import MetricPart, StoredRecord, process_means
from coordinator.results.numbers import fmt_p
from coordinator.results.record_check import BadRecord, stored_record

ALPHA = 0.05
MIN_UNITS = 3           # engine processes per side below which nothing is tested (as in stats.compare)
RECOVER_AFTER = 3       # agreements needed per disagreement before an agent leaves full re-checking
FLOOR_SHARE = 0.2       # the re-check floor as a share of base ...
FLOOR_MIN = 0.02        # ... but never below this

VerdictName = Literal["agree", "disagree", "unknown"]


@dataclass
class Verdict:
    """The verdict on one pair of records. ``metric`` names the metric that decided it (the
    first disagreeing one, else the first unknown one, else None); ``metrics`` holds one dict
    per compared metric (means, ratio b/a, CI, p, its own verdict and detail)."""
    verdict: VerdictName
    detail: str
    metric: str | None = None
    metrics: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _fmt(x: float) -> str:
    return f"{x:.1f}" if abs(x) < 1000 else f"{x:.0f}"


def _metric_check(name: str, ma: MetricPart, mb: MetricPart, tolerance: float, settings) -> dict:
    """Units, means, ratio (b/a), CI and raw p of one metric (verdict set by cross_check)."""
    from coordinator.results import stats     # numpy and scipy: loaded only once a replicated pair is compared

    ua = process_means(ma.samples, ma.process_sizes)
    ub = process_means(mb.samples, mb.process_sizes)
    ua = [u for u in ua if math.isfinite(u)]
    ub = [u for u in ub if math.isfinite(u)]
    row = {"metric": name, "unit": ma.unit or "t/s", "n_a": len(ua), "n_b": len(ub),
           "mean_a": None, "mean_b": None, "ratio": None, "ci_low": None, "ci_high": None,
           "p_value": None, "p_adjusted": None, "test": None, "verdict": "unknown", "detail": ""}
    if ua:
        row["mean_a"] = math.fsum(ua) / len(ua)
    if ub:
        row["mean_b"] = math.fsum(ub) / len(ub)
    if len(ua) < MIN_UNITS or len(ub) < MIN_UNITS:
        row["detail"] = (f"{name}: only {len(ua)} vs {len(ub)} engine processes "
                         f"(need {MIN_UNITS} each to tell)")
        return row
    c = stats.compare(ua, ub, name, settings)
    row.update(mean_a=c.mean_base, mean_b=c.mean_cand, ratio=c.ratio, ci_low=c.ci_low, ci_high=c.ci_high,
               p_value=c.p_value, p_adjusted=c.p_value, test=c.test)
    if c.ratio is None or c.p_value is None:
        row["detail"] = f"{name}: ratio undefined (mean {_fmt(c.mean_base or 0)} {row['unit']})"
    return row


def _decide_metric(row: dict, tolerance: float, alpha: float) -> None:
    """Set the metric's verdict and plain-words detail from p_adjusted, ratio and CI."""
    if row["ratio"] is None or row["p_adjusted"] is None:
        return
    name, unit, r = row["metric"], row["unit"], row["ratio"]
    band = math.log1p(tolerance)                   # symmetric: a vs b gives the same answer as b vs a
    head = (f"{name}: {_fmt(row['mean_a'])} vs {_fmt(row['mean_b'])} {unit} ({(r - 1) * 100:+.1f}%), "
            f"p={fmt_p(row['p_adjusted'])}")
    if r <= 0:
        row["detail"] = f"{head}; ratio not positive"
        return
    beyond = abs(math.log(r)) > band
    if row["p_adjusted"] < alpha and beyond:
        row["verdict"] = "disagree"
        row["detail"] = f"{head}; beyond the {tolerance:.0%} tolerance"
    elif (row["ci_low"] is not None and row["ci_low"] > 0
          and abs(math.log(row["ci_low"])) <= band and abs(math.log(row["ci_high"])) <= band):
        row["verdict"] = "agree"
        row["detail"] = (f"{head}; ratio CI [{row['ci_low']:.3f}, {row['ci_high']:.3f}] "
                         f"within the {tolerance:.0%} tolerance")
    elif beyond:
        row["detail"] = f"{head}; beyond the {tolerance:.0%} tolerance but not significant: too noisy to tell"
    else:
        ci = "" if row["ci_low"] is None else f", ratio CI [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"
        row["detail"] = f"{head}{ci}; too noisy to say it is within the {tolerance:.0%} tolerance"


def cross_check(a: dict, b: dict, tolerance: float = 0.10) -> Verdict:
    """Compare every metric that both records (two agents, one class, one cell) hold.

    Either record malformed -> disagree; either not ok -> unknown. A metric disagrees when
    its Holm-adjusted p (over the pair's metrics) < 0.05 AND the faster side is more than
    ``tolerance`` above the slower; agrees when the 95% CI of the ratio (stats.compare's) lies inside
    that band; else unknown. The pair disagrees if any metric does, agrees if every metric
    does, else is unknown. Never raises on the records' content.
    """
    if tolerance <= 0:
        raise ValueError("tolerance must be > 0 (two machines of one class are never identical)")
    typed = []
    for side, rec in (("first", a), ("second", b)):
        try:
            typed.append(stored_record(rec))
        except BadRecord as exc:
            who = rec.get("agent_id") if isinstance(rec, dict) else None
            whose = f"{printable(who)[:60]}'s record" if isinstance(who, str) and who else f"the {side} record"
            return Verdict("disagree", f"{whose} is malformed, so the pair cannot be compared: {exc}")
    try:
        return _cross_check(*typed, tolerance)
    except (ArithmeticError, ValueError) as exc:     # a corner the checks above let through
        return Verdict("disagree", f"the cross-check cannot be computed: {printable(exc)[:200]}")


def _cross_check(a: StoredRecord, b: StoredRecord, tolerance: float) -> Verdict:
    from coordinator.results import stats     # numpy and scipy: loaded only once a replicated pair is compared

    for rec in (a, b):
        if rec.status != "ok":
            return Verdict("unknown", f"{rec.agent_id}'s record is {rec.status}, not ok: nothing to compare")
    ma, mb = a.metrics, b.metrics
    names = [n for n in ma if n in mb]
    if not names:
        return Verdict("unknown", "the two records share no metric")
    settings = stats.Settings(alpha=ALPHA, min_effect=tolerance)
    rows = [_metric_check(n, ma[n], mb[n], tolerance, settings) for n in names]
    tested = [r for r in rows if r["p_value"] is not None]
    for r, p in zip(tested, stats.adjust_pvalues([r["p_value"] for r in tested], "holm")):
        r["p_adjusted"] = p
    for r in tested:
        _decide_metric(r, tolerance, ALPHA)
    bad = [r for r in rows if r["verdict"] == "disagree"]
    unsure = [r for r in rows if r["verdict"] == "unknown"]
    notes = []
    ca, cb = a.engine.commit, b.engine.commit
    if ca and cb and ca != cb:
        notes.append(f"note: engine commits differ ({ca} vs {cb})")
    if bad:
        verdict, decided, detail_rows = "disagree", bad[0]["metric"], bad
    elif unsure:
        verdict, decided, detail_rows = "unknown", unsure[0]["metric"], unsure
    else:
        verdict, decided, detail_rows = "agree", None, rows
    detail = "; ".join([*(r["detail"] for r in detail_rows), *notes]) if verdict != "agree" else \
        "; ".join([", ".join(f"{r['metric']} {(r['ratio'] - 1) * 100:+.1f}%" for r in rows)
                   + f", all within the {tolerance:.0%} tolerance", *notes])
    return Verdict(verdict, detail, decided, rows)


def check_records(records: list[dict], tolerance: float = 0.10) -> list[dict]:
    """Cross-check every replicated cell: each (run_id, cell_id, hardware_class) with ok,
    measured (not imported) records from >= 2 distinct agent_ids. Each agent's first record
    counts; the first agent's record is compared with each other agent's. One row per pair:
    {run_id, cell_id, hardware_class, params, agents: [a, b], fingerprints: [fa, fb],
    verdict, detail, metric, metrics}. Cheap when nothing is replicated (one grouping pass)."""
    first_seen: dict[tuple, dict] = {}                 # key -> the first ok record (the common case: the only one)
    groups: dict[tuple, dict[str, dict]] = {}          # key -> agent -> first record, only once replicated
    for rec in records:
        agent = rec.get("agent_id")
        if agent is None or rec.get("status") != "ok" or rec.get("origin", "measured") not in ("measured", None):
            continue
        key = (rec.get("run_id"), rec.get("cell_id"), rec.get("hardware_class") or "unknown")
        first = first_seen.setdefault(key, rec)
        if first is not rec and first.get("agent_id") != agent:
            groups.setdefault(key, {str(first.get("agent_id")): first}).setdefault(str(agent), rec)
    rows = []
    for (run_id, cell_id, hw_class), by_agent in groups.items():
        first, *others = by_agent.values()
        for other in others:
            v = cross_check(first, other, tolerance)
            rows.append({"run_id": run_id, "cell_id": cell_id, "hardware_class": hw_class,
                         "params": first.get("params") or {},
                         "agents": [str(first.get("agent_id")), str(other.get("agent_id"))],
                         "fingerprints": [first.get("agent_key_fingerprint"), other.get("agent_key_fingerprint")],
                         "verdict": v.verdict, "detail": v.detail, "metric": v.metric, "metrics": v.metrics})
    return rows


def recheck_rate(agreed: int, disagreed: int, base: float = 0.25) -> float:
    """The share of an agent's next cells to replicate on another agent of its class.

    - A new agent (no verdicts) gets ``base``.
    - With no disagreement, each agreement halves the distance to the floor,
      max(0.02, base / 5) (never above base): base, then towards the floor.
    - With disagreements, the rate is 1.0 (every cell re-checked) until
      RECOVER_AFTER (3) agreements per disagreement have followed; after that it halves the
      distance from 1.0 towards ``base`` per further agreement, and never drops below base
      again: an agent that once disagreed does not earn the floor.

    Monotone: never rises with more agreements, never falls with more disagreements. The
    caller chooses the window the counts cover (all history, or the last N verdicts).
    """
    if not 0.0 <= base <= 1.0:
        raise ValueError(f"base must be in [0, 1], got {base}")
    if agreed < 0 or disagreed < 0:
        raise ValueError("agreed and disagreed are counts (>= 0)")
    if disagreed == 0:
        floor = min(base, max(FLOOR_MIN, base * FLOOR_SHARE))
        return floor + (base - floor) * 0.5 ** agreed
    extra = agreed - RECOVER_AFTER * disagreed
    if extra < 0:
        return 1.0
    return base + (1.0 - base) * 0.5 ** (extra + 1)
