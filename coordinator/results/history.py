"""A series' history over runs or commits, and the changes in it (issue #15).

A series is one (hardware class, params without ref, metric); its points are the ok records of
that class with those params, one per (run, ref) record or one per ref pooled over runs. Each
point's value is the median of its engine processes (coordinator.results.compare.units).

Changes are found with ruptures on the measured points' values: a penalised L2 segmentation
(Pelt, or Binseg on long series) with a penalty from a robust noise estimate, then every
boundary must pass a Welch t-test between its two neighbouring segments (p < 0.01) and move
the mean by at least 2%; a boundary that fails is merged away and its neighbours re-tested.

Who moved: a control (a fixed ref re-measured in the same runs) tells the code from the host.
A change of the value relative to the control is the code's; a change of the value that the
control's own series shares is the machine's. Without a control a change's cause is unknown.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import math
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from coordinator.results.compare import units
from coordinator.results.stats import welch_p

COST, MIN_SIZE, JUMP = "l2", 2, 1
PENALTY_C = 10.0            # penalty = PENALTY_C * sigma^2 * ln(n)
P_THRESHOLD = 0.01          # Welch t-test between adjacent segments
MIN_CHANGE = 0.02           # |after / before - 1| a change must reach
PELT_MAX_POINTS = 24          # exact Pelt costs ~3 ms at 60 points, Binseg 0.08 ms: a site has a series per cell
COINCIDE = 1                # a value change and a control change within this many points are one event
BUILD_FIELDS = ("kind", "build_flags", "cmake")
NO_CONTROL_NOTE = "no control re-measured: cannot tell code from host"


@dataclass(frozen=True)
class SeriesKey:
    hw_class: str
    params: dict            # without "ref"
    metric: str

    def label(self) -> str:
        params = " ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return " ".join(p for p in (self.hw_class, params, self.metric) if p)

    def slug(self) -> str:
        """A stable short id (a file name on the site): the same series gives the same slug."""
        text = json.dumps([self.hw_class, self.params, self.metric], sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:12]

    def __hash__(self) -> int:
        return hash(self.slug())


@dataclass
class Point:
    index: int
    ref: str
    commit: str | None
    run_id: str
    finished: str | None
    value: float
    low: float
    high: float
    processes: int
    relative: float | None
    imported: bool
    hardware_change: str | None = None
    build_change: str | None = None
    runs: int = 1           # runs pooled into this point (x="commit"); 1 for x="date"


@dataclass
class ChangePoint:
    index: int              # the first point after the change
    before: float
    after: float
    change_pct: float
    p_value: float
    on: str                 # "value" | "relative"
    cause: str              # "code" | "host" | "unknown"
    note: str


@dataclass
class History:
    key: SeriesKey
    x: str
    control: str | None
    points: list[Point]
    changes: list[ChangePoint]
    method: dict = field(default_factory=dict)


class Found(NamedTuple):
    """One change find_changes kept: the position of the first value after it, its Welch p,
    and the means of the segments either side."""
    index: int
    p_value: float
    before: float
    after: float


# ---------------------------------------------------------------- detection

def noise_sigma(values: list[float]) -> float:
    """The point-to-point noise, robust to the steps being looked for: the MAD of the first
    differences (scaled to a normal SD) over sqrt(2), since a difference holds two noises."""
    diffs = [b - a for a, b in zip(values, values[1:])]
    if not diffs:
        return 0.0
    mid = statistics.median(diffs)
    mad = statistics.median(abs(d - mid) for d in diffs)
    return 1.4826 * mad / math.sqrt(2)


def penalty(values: list[float]) -> tuple[float, float]:
    """(sigma, penalty) for ``values``; a noiseless series gets a tiny floor, not zero."""
    sigma = max(noise_sigma(values), 1e-9 * max(1.0, abs(statistics.median(values))))
    return sigma, PENALTY_C * sigma ** 2 * math.log(max(len(values), 2))


def algorithm_for(n: int) -> str:
    return "Pelt" if n <= PELT_MAX_POINTS else "Binseg"


def _tested(values: list[float], bounds: list[int]) -> list[Found]:
    """Each boundary with the t-test and means of the segments on either side of it."""
    edges = [0, *bounds, len(values)]
    out = []
    for i, at in enumerate(bounds, start=1):
        left, right = values[edges[i - 1]:at], values[at:edges[i + 1]]
        out.append(Found(at, welch_p(np.asarray(left), np.asarray(right)), statistics.fmean(left),
                         statistics.fmean(right)))
    return out


def _passes(f: Found) -> bool:
    return f.p_value < P_THRESHOLD and f.before != 0 and abs(f.after / f.before - 1) >= MIN_CHANGE


def _l2_sums():
    """ruptures' L2 cost (a segment's sum of squared deviations from its mean) from cumulative
    sums: O(1) a segment where CostL2 takes a numpy call over it, 10x faster on long series."""
    from ruptures.base import BaseCost

    class L2Sums(BaseCost):
        model, min_size = COST, MIN_SIZE

        def fit(self, signal):
            self.signal = np.asarray(signal, dtype=float).reshape(-1, 1)
            x = self.signal[:, 0] - self.signal.mean()          # centred: the sums lose no precision
            self.sums, self.squares = [0.0, *np.cumsum(x).tolist()], [0.0, *np.cumsum(x * x).tolist()]
            return self

        def error(self, start, end):
            s = self.sums[end] - self.sums[start]
            return self.squares[end] - self.squares[start] - s * s / (end - start)

    return L2Sums()


def find_changes(values: list[float]) -> list[Found]:
    """The significant changes in ``values`` (in order), see the module doc. The weakest
    failing boundary is merged away first, then the rest re-tested on the merged segments."""
    import ruptures as rpt

    n = len(values)
    if n < 2 * MIN_SIZE:
        return []
    _, pen = penalty(values)
    algo = rpt.Pelt if algorithm_for(n) == "Pelt" else rpt.Binseg
    bounds = algo(custom_cost=_l2_sums(), min_size=MIN_SIZE, jump=JUMP).fit(np.asarray(values)).predict(pen=pen)
    bounds = [b for b in bounds if 0 < b < n]
    while True:
        found = _tested(values, bounds)
        failing = [f for f in found if not _passes(f)]
        if not failing:
            return found
        worst = max(failing, key=lambda f: (f.p_value, -abs(f.after - f.before)))
        bounds.remove(worst.index)


def method(runs: dict) -> dict:
    """Everything needed to reproduce the changes: the library and its settings, and per
    detected series (value, relative, control) its length, noise, penalty and algorithm."""
    from importlib.metadata import version

    return {"library": "ruptures", "version": version("ruptures"),
            "algorithm": f"Pelt up to {PELT_MAX_POINTS} points, Binseg above (Pelt is slow in ruptures: 2.7 ms against 0.08 ms at 60 points)",
            "cost": COST, "cost_implementation": "cumulative sums (equal to ruptures' CostL2)", "min_size": MIN_SIZE, "jump": JUMP,
            "penalty": f"{PENALTY_C:g} * sigma^2 * ln(n)", "penalty_c": PENALTY_C,
            "sigma": "1.4826 * MAD(first differences) / sqrt(2)",
            "significance": "Welch t-test between adjacent segments' point values (coordinator.results.stats.welch_p, equal to scipy.stats.ttest_ind)",
            "p_threshold": P_THRESHOLD, "min_change_pct": 100 * MIN_CHANGE,
            "pruning": "the failing boundary with the largest p is merged away, the rest re-tested",
            "imported": "shown, never used for detection", "coincide_points": COINCIDE, "series": runs}


def _run_info(values: list[float]) -> dict:
    if len(values) < 2:
        return {"n": len(values)}
    sigma, pen = penalty(values)
    return {"n": len(values), "sigma": sigma, "penalty": pen, "algorithm": algorithm_for(len(values))}


# ---------------------------------------------------------------- records to points

def _series_params(rec: dict) -> dict:
    return {k: v for k, v in (rec.get("params") or {}).items() if k != "ref"}


def _order(rec: dict) -> tuple:
    ts = rec.get("timestamps") or {}
    return (ts.get("finished") or ts.get("started") or "", rec.get("run_id") or "",
            str((rec.get("params") or {}).get("ref")), rec.get("agent_id") or "", rec.get("cell_id") or "")


def _values(rec: dict, metric: str) -> list[float]:
    m = (rec.get("metrics") or {}).get(metric)
    return units(m) if m else []


def _usable(rec: dict, metric: str) -> bool:
    return rec.get("status") == "ok" and bool(_values(rec, metric))


def series_keys(records: list[dict]) -> list[SeriesKey]:
    """Every series with at least two points, ordered by class, params and metric."""
    counts: Counter = Counter()
    keys = {}
    for rec in records:
        if rec.get("status") != "ok":
            continue
        for metric in rec.get("metrics") or {}:
            if _usable(rec, metric):
                key = SeriesKey(str(rec.get("hardware_class")), _series_params(rec), metric)
                keys[key.slug()] = key
                counts[key.slug()] += 1
    chosen = [keys[s] for s, c in counts.items() if c >= 2]
    return sorted(chosen, key=lambda k: (k.hw_class, json.dumps(k.params, sort_keys=True, default=str), k.metric))


def _members(records: list[dict], key: SeriesKey) -> list[dict]:
    return sorted((r for r in records if str(r.get("hardware_class")) == key.hw_class
                   and _series_params(r) == key.params and _usable(r, key.metric)), key=_order)


def pick_control(members: list[dict]) -> str | None:
    """The ref re-measured most often at one commit (a moving ref such as master is no
    control), if it was measured in at least two runs that also measured another ref of the
    series (else there is nothing to hold it against). Ties go to the first ref by name."""
    refs_in_run: dict[str, set] = defaultdict(set)
    commits: dict[str, set] = defaultdict(set)
    for rec in members:
        if rec.get("origin") != "imported":
            ref = str(rec["params"].get("ref"))
            refs_in_run[rec.get("run_id")].add(ref)
            commits[ref].add((rec.get("engine") or {}).get("commit"))
    runs_of = Counter(ref for refs in refs_in_run.values() for ref in refs if len(commits[ref]) == 1)
    for ref, _ in sorted(runs_of.items(), key=lambda kv: (-kv[1], kv[0])):
        shared = sum(1 for refs in refs_in_run.values() if ref in refs and len(refs) > 1)
        return ref if shared >= 2 else None
    return None


def _flatten(node, prefix: str = "") -> dict[str, str]:
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node if isinstance(node, str) else json.dumps(node, sort_keys=True)}


def _shown(value) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, list):
        return " ".join(map(str, value)) or "[]"
    return str(value)


def hardware_change(before: dict, after: dict) -> str | None:
    """'os.kernel 6.1.0 -> 6.8.0; ...' for every hardware field that differs (hostname aside)."""
    if before.get("hardware") == after.get("hardware"):
        return None                 # the common case, compared in C before anything is flattened
    old, new = _flatten(before.get("hardware") or {}), _flatten(after.get("hardware") or {})
    diffs = [f"{k} {old.get(k, '(none)')} -> {new.get(k, '(none)')}" for k in sorted(set(old) | set(new))
             if k != "hostname" and old.get(k) != new.get(k)]
    return "; ".join(diffs) or None


def build_change(before: dict, after: dict) -> str | None:
    """'engine.build_flags A -> A B; ...' for the build settings that differ."""
    old, new = before.get("engine") or {}, after.get("engine") or {}
    diffs = [f"engine.{k} {_shown(old.get(k))} -> {_shown(new.get(k))}" for k in BUILD_FIELDS
             if old.get(k) != new.get(k)]
    return "; ".join(diffs) or None


def _point(recs: list[dict], metric: str) -> Point:
    first = recs[0]
    values = [v for r in recs for v in _values(r, metric)]
    commit = (first.get("engine") or {}).get("commit")
    return Point(index=0, ref=str(first["params"].get("ref")), commit=commit[:12] if commit else None,
                 run_id=str(first.get("run_id")), finished=(first.get("timestamps") or {}).get("finished"),
                 value=statistics.median(values), low=min(values), high=max(values), processes=len(values),
                 relative=None, imported=first.get("origin") == "imported",
                 runs=len({r.get("run_id") for r in recs}))


def _groups(members: list[dict], x: str) -> list[list[dict]]:
    """The records behind each point, in point order. x="commit" pools a ref's records at one
    commit (a moving ref such as master gives a point per commit); imports stay apart."""
    if x == "date":
        return [[r] for r in members]
    pooled: dict[tuple, list[dict]] = {}
    for rec in members:                        # members are in time order: first measurement first
        ref = (str(rec["params"].get("ref")), (rec.get("engine") or {}).get("commit"), rec.get("origin"))
        pooled.setdefault(ref, []).append(rec)
    return list(pooled.values())


def _control_by_run(members: list[dict], metric: str, control: str | None) -> dict[str, float]:
    per_run: dict[str, list[float]] = defaultdict(list)
    for rec in members:
        if control is not None and str(rec["params"].get("ref")) == control and rec.get("origin") != "imported":
            per_run[rec.get("run_id")].append(statistics.median(_values(rec, metric)))
    return {run: statistics.median(v) for run, v in per_run.items()}


def _relative(recs: list[dict], metric: str, control_of_run: dict[str, float]) -> float | None:
    """The value over the control's in the same run; pooled points take the median over runs."""
    ratios = [statistics.median(_values(r, metric)) / control_of_run[r.get("run_id")]
              for r in recs if control_of_run.get(r.get("run_id"))]
    return statistics.median(ratios) if ratios else None


# ---------------------------------------------------------------- the history

def history(records: list[dict], key: SeriesKey, x: str = "date", control: str | None = None) -> History:
    """The points of ``key`` (x: "date" one per run and ref, "commit" one per ref and commit) and the
    changes in them; ``control`` None picks one (pick_control), or names the ref to use."""
    if x not in ("date", "commit"):
        raise ValueError(f"x is 'date' or 'commit', not {x!r}")
    members = _members(records, key)
    control = control if control is not None else pick_control(members)
    control_of_run = _control_by_run(members, key.metric, control)
    groups = _groups(members, x)
    points = []
    for i, recs in enumerate(groups):
        p = _point(recs, key.metric)
        p.index, p.relative = i, _relative(recs, key.metric, control_of_run)
        if i:
            p.hardware_change = hardware_change(groups[i - 1][0], recs[0])
            p.build_change = build_change(groups[i - 1][0], recs[0])
        points.append(p)
    changes, runs = _changes(points, [_order(g[0]) for g in groups], members, key.metric, control)
    return History(key=key, x=x, control=control, points=points, changes=changes, method=method(runs))


def _changes(points: list[Point], order: list[tuple], members: list[dict], metric: str,
             control: str | None) -> tuple[list[ChangePoint], dict]:
    """Changes on the value series; with a control, also on the value relative to it (the
    code's) and on the control's own series, which marks value changes it shares as the host's."""
    measured = [p for p in points if not p.imported and p.ref != control]
    values = [p.value for p in measured]
    found_value = [(measured[f.index], f) for f in find_changes(values)]
    runs = {"value": _run_info(values)}
    if control is None:
        return [_change(p, f, "value", "unknown", NO_CONTROL_NOTE) for p, f in found_value], runs

    # the control's own history, one value per run in time order, to tell the host's moves
    ctl = sorted((_order(r), statistics.median(_values(r, metric)))
                 for r in members if str(r["params"].get("ref")) == control and r.get("origin") != "imported")
    ctl_order, ctl_values = [o for o, _ in ctl], [v for _, v in ctl]
    ctl_found = find_changes(ctl_values)
    rel = [p for p in measured if p.relative is not None]
    rel_values = [p.relative for p in rel]
    found_rel = [(rel[f.index], f) for f in find_changes(rel_values)]
    runs.update(relative=_run_info(rel_values), control=_run_info(ctl_values))

    position = {p.index: i for i, p in enumerate(measured)}
    out = [_change(p, f, "relative", "code", f"changed relative to control {control} measured in the same runs")
           for p, f in found_rel]
    for p, f in found_value:
        at = bisect.bisect_left(ctl_order, order[p.index])
        shared = [c for c in ctl_found if abs(c.index - at) <= COINCIDE]
        if shared:
            moved = 100 * (shared[0].after / shared[0].before - 1)
            out.append(_change(p, f, "value", "host", f"control {control} moved too ({moved:+.1f}%): "
                                                      "the machine drifted, not the code"))
        elif not any(abs(position[r.index] - position[p.index]) <= COINCIDE for r, _ in found_rel):
            out.append(_change(p, f, "value", "unknown", f"control {control} steady, yet no change relative "
                                                         "to it was significant"))
    return sorted(out, key=lambda c: (c.index, c.on)), runs


def _change(p: Point, f: Found, on: str, cause: str, note: str) -> ChangePoint:
    return ChangePoint(index=p.index, before=f.before, after=f.after, change_pct=100 * (f.after / f.before - 1),
                       p_value=f.p_value, on=on, cause=cause, note=note)
