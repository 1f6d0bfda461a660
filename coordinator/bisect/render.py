"""A bisect as people read it: the culprit(s) with their A/B against the parent, the path taken,
and the totals. Made from the journal alone, so `hwmatrix report --bisect ID` prints the same."""
from __future__ import annotations

from tabulate import tabulate

from coordinator.reports.model import fmt_ratio


def _commit(journal: dict, i: int | None) -> str:
    if i is None:
        return "-"
    return journal["commits"][i]["sha"][:10]


def render(journal: dict) -> str:
    """Markdown: what was found, the path (commit, verdict, ratio, processes), the totals."""
    result = journal.get("result") or {}
    commits = journal["commits"]
    metric = journal.get("metric", "tg_tps")
    lines = [f"## bisect {journal['bisect_id']}",
             "",
             f"good {commits[0]['sha'][:10]} .. bad {commits[-1]['sha'][:10]}: {len(commits) - 1} first-parent "
             f"commits after good; metric {metric}, looking for {journal.get('find', 'slower')}; "
             f"on {journal.get('host') or '?'} ({journal.get('hw_class') or '?'})",
             ""]
    ends = result.get("ends")
    if ends:
        lines.append(f"ends: bad/good {metric} {fmt_ratio(ends)} ({ends['verdict']}, {ends.get('pairs', 0)} processes "
                     "a side, interleaved)")
    lines += [f"**{result.get('status', 'unfinished')}**: {result.get('message', '')}", ""]
    for change in result.get("changes", []):
        c = commits[change["culprit"]]
        confirm = change.get("confirm") or {}
        lines.append(f"- culprit **{c['sha'][:12]}** {c['subject']!r} ({c['date']})")
        lines.append(f"  against its parent {_commit(journal, change['parent'])}: {metric} ratio {fmt_ratio(confirm)} "
                     f"-> {confirm.get('verdict', 'not measured')}")
        if len(change.get("candidates") or []) > 1:
            lines.append("  one of: " + ", ".join(_commit(journal, i) for i in change["candidates"]))
        if change.get("note"):
            lines.append(f"  note: {change['note']}")
    for lo, hi, why in result.get("unsettled", []):
        lines.append(f"- open: between {_commit(journal, lo)} and {_commit(journal, hi)}: {why}")
    rows = [[n + 1, _commit(journal, s["commit"]), commits[s["commit"]]["subject"][:48], s["action"],
             _commit(journal, s.get("against")), s["verdict"], fmt_ratio(s), s.get("processes") or "-", s.get("note", "")]
            for n, s in enumerate(result.get("steps", []))]
    lines += ["", "path:", "", tabulate(rows, headers=["step", "commit", "subject", "asked", "against", "verdict",
                                                       "ratio [95% CI]", "processes", "note"],
                                        tablefmt="pipe", disable_numparse=True), ""]
    totals = result.get("totals") or {}
    if totals:
        lines.append(f"totals: {totals['builds']} builds ({totals['builds_beyond_ends']} beyond the ends, "
                     f"{totals['cached_builds']} cached), {totals['processes']} engine processes in "
                     f"{totals['groups']} interleaved groups, {totals['wall_s']:.0f} s wall time"
                     + (f"; replayed from the store: {totals['replayed_builds']} builds, "
                        f"{totals['replayed_measures']} groups" if totals.get("replayed_measures")
                        or totals.get("replayed_builds") else ""))
    lines.append("Ratios are candidate/base of the metric (higher is faster); each group's processes ran interleaved "
                 "on one machine and stopped by the sequential rule (anytime-valid CI).")
    return "\n".join(lines)
