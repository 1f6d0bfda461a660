"""The search of `hwmatrix bisect`, apart from builds, runs and the store: commits are indexes
0..N of the first-parent range (0 = good, N = bad), and a Lab answers two questions, "what
code does commit i build to?" and "how do these commits compare, interleaved on one machine?".
So the whole strategy is testable in milliseconds with a made-up lab, and the real lab
(coordinator.bisect.lab) only builds and measures.

Strategy:
- Both ends first (one interleaved A/B): stop unless bad is ``find`` (slower) than good.
- Binary search of a bracket (lo, hi) that holds a change: build the midpoint; a commit that
  does not build or run is skipped (as `git bisect skip`); one whose code hash equals an end's
  is that end's side, unmeasured. Otherwise mid is measured interleaved with lo, and the
  three-way verdict picks the side (slower: the change is in (lo, mid]; same or the other
  way: in (mid, hi]). An "unknown" after the process cap asks mid against hi instead.
  The last split (one commit between lo and hi) measures lo, mid and hi together, so both
  halves are judged at once and the culprit's A/B against its parent is in the same group.
- The culprit is confirmed by an interleaved A/B against its parent (the last group when it
  held exactly that pair).
- More than one change: when both halves of the last split are ``find``, that is two
  culprits; and when a confirmed culprit explains clearly less than its bracket's change
  (more than a quarter off it, in log-ratio; being inside a loose interval of the bracket
  does not count), the rest of the bracket (before the parent, after the culprit) is measured, and a part
  that still differs becomes a bracket of its own, searched the same way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

OTHER_WAY = {"slower": "faster", "faster": "slower"}
# A culprit "explains" its bracket's change when their log-ratios are this close, as a share
# of the bracket's (or min_effect, if larger): beyond it the rest of the bracket is measured.
EXPLAINED_SHARE = 0.25
MAX_CHANGES = 4


@dataclass(frozen=True)
class PairVerdict:
    """The sequential verdict of cand against base, interleaved (ratio = cand / base)."""
    verdict: str                 # slower | faster | same | unknown
    ratio: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    pairs: int = 0


@dataclass
class Measured:
    verdicts: dict[tuple[int, int], PairVerdict]
    processes: int = 0                       # engine processes the group ran, all cells
    failed: dict[int, str] = field(default_factory=dict)   # commit index -> why its cell did not measure


class Lab(Protocol):
    def code(self, i: int) -> tuple[str | None, str | None]:
        """(code hash, None) once commit i is built, or (None, why it does not build)."""

    def measure(self, commits: list[int], pairs: list[tuple[int, int]], purpose: str,
                effect: float | None = None) -> Measured:
        """Measure ``commits`` interleaved on the bisect's machine; a verdict per (base, cand) pair.
        ``effect``: the ratio of the change being narrowed down (None for the ends), which
        sets how close counts as "same"."""


@dataclass
class Step:
    """One row of the path: what was asked of which commit, and the answer."""
    commit: int
    against: int | None
    action: str                  # ends | midpoint | other side | confirm | rest | build
    verdict: str                 # slower | faster | same | unknown | skipped | same code
    ratio: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    processes: int = 0
    note: str = ""


@dataclass
class Change:
    culprit: int
    parent: int
    confirm: PairVerdict | None
    candidates: list[int] = field(default_factory=list)   # >1: skipped commits hide which one
    note: str = ""


@dataclass
class Result:
    status: str        # found | no change | other way | unknown | same code | end failed | unsettled
    message: str
    ends: PairVerdict | None = None
    changes: list[Change] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    unsettled: list[tuple[int, int, str]] = field(default_factory=list)   # brackets left open, and why
    builds: int = 0


def _log_ratio(v: PairVerdict) -> float | None:
    return math.log(v.ratio) if v.ratio and v.ratio > 0 else None


def explains(part: PairVerdict, whole: PairVerdict, min_effect: float = 0.02) -> bool:
    """Whether ``part`` (one commit's change) is about all of ``whole`` (a bracket's): within
    EXPLAINED_SHARE of it. Being inside the whole's interval is not enough: an ends group
    stopped at 4 processes a side leaves it so loose that a second change fits in it too (the
    two-change chain's first culprit, 0.726, sat inside ends of 0.615 [0.463, 0.816]); only
    measuring the rest of the bracket tells those apart."""
    a, b = _log_ratio(part), _log_ratio(whole)
    if a is None or b is None:
        return True
    return abs(a - b) <= max(EXPLAINED_SHARE * abs(b), min_effect)


class Bisect:
    """One search; ``run()`` returns the Result. ``find`` is the direction sought: "slower"
    (a regression, the default) or "faster" (which commit sped it up)."""

    def __init__(self, n: int, lab: Lab, find: str = "slower", max_changes: int = MAX_CHANGES):
        if n < 1:
            raise ValueError("a range needs at least one commit after good")
        self.n, self.lab, self.find, self.max_changes = n, lab, find, max_changes
        self.codes: dict[int, str | None] = {}
        self.result = Result(status="", message="")

    # ---------------------------------------------------------------- questions to the lab

    def _code(self, i: int) -> str | None:
        if i not in self.codes:
            code, why = self.lab.code(i)
            self.codes[i] = code
            self.result.builds += 1
            if code is None:
                self.result.steps.append(Step(i, None, "build", "skipped", note=why or "does not build"))
        return self.codes[i]

    def _measure(self, commits: list[int], pairs: list[tuple[int, int]], action: str,
                 whole: PairVerdict | None = None) -> Measured:
        got = self.lab.measure(commits, pairs, action, effect=whole.ratio if whole else None)
        share = got.processes // max(1, len(pairs))
        for base, cand in pairs:
            v = got.verdicts.get((base, cand))
            if v is None:
                continue
            self.result.steps.append(Step(cand, base, action, v.verdict, v.ratio, v.ci_low, v.ci_high, share))
        for i, why in got.failed.items():
            self.result.steps.append(Step(i, None, action, "skipped", note=f"did not run: {why}"))
        return got

    # ---------------------------------------------------------------- the search

    def run(self) -> Result:
        r = self.result
        for end, name in ((0, "good"), (self.n, "bad")):
            if self._code(end) is None:
                r.status, r.message = "end failed", f"the {name} end does not build; nothing can be compared to it"
                return r
        if self.codes[0] == self.codes[self.n]:
            r.status = "same code"
            r.message = "good and bad build to the same code: there is no change to find"
            return r
        got = self._measure([0, self.n], [(0, self.n)], "ends")
        ends = got.verdicts.get((0, self.n))
        r.ends = ends
        if ends is None:
            r.status, r.message = "end failed", f"an end did not run: {'; '.join(got.failed.values())}"
            return r
        if ends.verdict != self.find:
            r.status, r.message = self._ends_message(ends)
            return r
        brackets = [(0, self.n, ends)]
        while brackets and len(r.changes) < self.max_changes:
            lo, hi, whole = brackets.pop(0)
            for change in self._search(lo, hi, whole, brackets):
                r.changes.append(change)
        if brackets:
            r.unsettled += [(lo, hi, f"not searched: {self.max_changes} changes found already")
                            for lo, hi, _ in brackets]
        confirmed = [c for c in r.changes if c.confirm is not None and c.confirm.verdict == self.find]
        if confirmed:
            r.status = "found"
            r.message = (f"{len(r.changes)} changes" if len(r.changes) > 1 else "one change")
        else:
            r.status = "unsettled"
            r.message = "no culprit could be confirmed" + (f": {r.unsettled[0][2]}" if r.unsettled else "")
        return r

    def _ends_message(self, ends: PairVerdict) -> tuple[str, str]:
        ratio = f" (ratio {ends.ratio:.3f})" if ends.ratio else ""
        if ends.verdict == "same":
            return "no change", f"good and bad are the same within the margin{ratio}: there is no change to find"
        if ends.verdict == OTHER_WAY[self.find]:
            return "other way", (f"bad is {ends.verdict} than good{ratio}, not {self.find}: the change points the "
                                 f"other way (to find the commit that made it {ends.verdict}, use --find {ends.verdict})")
        return "unknown", (f"good and bad could not be told apart after {ends.pairs} processes a side{ratio}; "
                           "more processes (--max-processes) or a quieter machine would settle it")

    def _pick(self, lo: int, hi: int, skipped: set[int]) -> int | None:
        """The commit nearest the middle of (lo, hi) not skipped yet (the lower one on a tie)."""
        inner = [i for i in range(lo + 1, hi) if i not in skipped]
        middle = (lo + hi) / 2
        return min(inner, key=lambda i: (abs(i - middle), i)) if inner else None

    def _search(self, lo: int, hi: int, whole: PairVerdict, brackets: list) -> list[Change]:
        """Narrow (lo, hi], which holds a ``find`` change of ``whole``'s size, to its culprit(s)."""
        first_lo, first_hi = lo, hi
        skipped: set[int] = set()
        # the newest interleaved A/B of the bracket's own ends (at first: what showed the change)
        last: tuple[int, int, PairVerdict] | None = (lo, hi, whole)
        while True:
            mid = self._pick(lo, hi, skipped)
            if mid is None:
                break
            code = self._code(mid)
            if code is None:
                skipped.add(mid)
                continue
            if code in (self.codes[lo], self.codes[hi]):
                side = lo if code == self.codes[lo] else hi
                self.result.steps.append(Step(mid, side, "midpoint", "same code",
                                              note=f"builds to the same code as {'lo' if side == lo else 'hi'}"))
                lo, hi = (mid, hi) if side == lo else (lo, mid)
                continue
            final = not [i for i in range(lo + 1, hi) if i != mid and i not in skipped]
            pairs = [(lo, mid), (mid, hi)] if final else [(lo, mid)]
            got = self._measure([lo, mid, hi] if final else [lo, mid], pairs, "midpoint", whole)
            if mid in got.failed:
                skipped.add(mid)
                continue
            if got.failed:
                self.result.unsettled.append((lo, hi, "a bracket end did not run: " + "; ".join(got.failed.values())))
                return []
            left = got.verdicts[(lo, mid)]
            right = got.verdicts.get((mid, hi))
            if final and left.verdict == self.find and right.verdict == self.find:
                return [self._confirmed(lo, mid, left, first_lo, first_hi, whole, brackets, final_split=True),
                        self._confirmed(mid, hi, right, first_lo, first_hi, whole, brackets, final_split=True)]
            if left.verdict == self.find:
                lo, hi, last = lo, mid, (lo, mid, left)
            elif left.verdict in ("same", OTHER_WAY[self.find]):
                if left.verdict != "same":
                    self.result.steps[-len(pairs)].note = f"a change the other way lies in this half ({left.verdict})"
                lo, hi = mid, hi
                last = (mid, hi, right) if right is not None else None
            else:                                   # unknown at the cap: ask the other half
                if right is None:
                    got = self._measure([mid, hi], [(mid, hi)], "other side", whole)
                    if got.failed:
                        skipped.add(mid)
                        continue
                    right = got.verdicts[(mid, hi)]
                if right.verdict == self.find:
                    lo, last = mid, (mid, hi, right)
                elif right.verdict == "same":
                    hi, last = mid, None
                else:
                    self.result.unsettled.append((lo, hi, f"commit {mid} is like neither end after the process cap "
                                                          f"({left.verdict} against lo, {right.verdict} against hi)"))
                    return []
        if hi - lo > 1:                # only skipped commits left between: the culprit is one of them
            change = self._confirmed(lo, hi, None, first_lo, first_hi, whole, brackets)
            change.candidates = [i for i in range(lo + 1, hi + 1)]
            change.note = "commits between could not be built or run: the change is in one of them"
            return [change]
        return [self._confirmed(lo, hi, last[2] if last and last[:2] == (lo, hi) else None,
                                first_lo, first_hi, whole, brackets)]

    def _confirmed(self, parent: int, culprit: int, seen: PairVerdict | None, first_lo: int, first_hi: int,
                   whole: PairVerdict, brackets: list, final_split: bool = False) -> Change:
        """The culprit's A/B against its parent (the last group's, when it held that pair), and
        the rest of the bracket measured when the culprit does not explain its change."""
        confirm = seen
        if confirm is None:
            got = self._measure([parent, culprit], [(parent, culprit)], "confirm", whole)
            confirm = got.verdicts.get((parent, culprit))
        change = Change(culprit=culprit, parent=parent, confirm=confirm)
        if culprit - parent > 1:          # skipped commits between: any of them may be the one
            change.candidates = list(range(parent + 1, culprit + 1))
            change.note = "commits between could not be built or run: the change is in one of them"
        if confirm is None or confirm.verdict != self.find:
            change.note = "not confirmed against its parent"
            return change
        if not final_split and not explains(confirm, whole):
            for lo, hi in ((first_lo, parent), (culprit, first_hi)):
                if hi <= lo or self.codes.get(lo) == self.codes.get(hi):
                    continue
                got = self._measure([lo, hi], [(lo, hi)], "rest", whole)
                rest = got.verdicts.get((lo, hi))
                if rest is not None and rest.verdict == self.find:
                    brackets.append((lo, hi, rest))
                    change.note = "explains only part of the change: another lies in the range"
        return change
