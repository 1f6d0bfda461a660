"""The offer rule: which cells a volunteer takes. The agent sends its owner's terms
(:func:`lease_terms`) when it asks for work; the coordinator offers only cells the terms
allow, and the agent checks each cell it gets again before it fetches anything
(:func:`refusal`). Both sides call :func:`terms_allow`, so what is offered and what is
accepted agree.
"""
from __future__ import annotations

import re
from typing import Any

from agent.volunteer.policy import OwnerPolicy
from agent.volunteer.source_names import normalize_source, source_id


def lease_terms(policy: OwnerPolicy) -> dict:
    """What the agent sends when asking for work, so it is offered only cells it may run."""
    return {"repos": sorted(set(policy.repos)), "allow_fork_prs": policy.allow_fork_prs, "max_gpus": policy.gpus}


_PR_REF = re.compile(r"^refs/(pull|merge-requests)/")


def _ref_problem(ref: Any, allow_fork_prs: bool) -> str | None:
    if not isinstance(ref, dict):
        return "malformed cell spec: ref is not a mapping"
    kind, value = ref.get("kind"), ref.get("value")
    if kind not in ("ref", "branch", "tag", "commit", "pr") or not isinstance(value, str):
        return f"malformed cell spec: ref kind {kind!r} / value {value!r}"
    # a plain ref such as refs/pull/N/head is fork PR code too
    is_pr = kind == "pr" or (kind in ("ref", "branch", "tag") and bool(_PR_REF.match(value.strip())))
    if is_pr and not allow_fork_prs:
        return (f"ref {ref.get('name', value)!r} is pull request {value!r} (fork code); "
                "the owner does not allow fork PRs")
    return None


def terms_allow(terms: dict, spec: dict) -> str | None:
    """Why ``spec`` falls outside ``terms`` (see :func:`lease_terms`), or None. Never raises:
    a malformed spec or terms is a reason, not a crash. The coordinator and the agent both
    call this, so what is offered and what is accepted follow one rule."""
    if not isinstance(terms, dict):
        return "malformed lease terms: not a mapping"
    repos, allow_prs, max_gpus = terms.get("repos"), terms.get("allow_fork_prs", False), terms.get("max_gpus", 0)
    if (not isinstance(repos, list) or not all(isinstance(r, str) for r in repos)
            or not isinstance(allow_prs, bool) or not isinstance(max_gpus, int) or isinstance(max_gpus, bool)):
        return "malformed lease terms: expected repos (list of str), allow_fork_prs (bool), max_gpus (int)"
    if not isinstance(spec, dict):
        return "malformed cell spec: not a mapping"
    try:
        source = source_id(spec.get("engine"))
        allowed = {normalize_source(r) for r in repos}
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        return f"malformed cell spec: {exc}"
    if source not in allowed:
        return f"source {source} is not in the owner's allowed repos"
    problem = _ref_problem(spec.get("ref"), allow_prs)
    if problem:
        return problem
    gpus = spec.get("gpus")
    if gpus is None:
        gpus = 0
    if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 0:
        return f"malformed cell spec: gpus {gpus!r}"
    if gpus > max_gpus:
        return f"needs {gpus} GPU{'s' if gpus != 1 else ''}, the owner allows {max_gpus}"
    return None


def refusal(policy: OwnerPolicy, spec: dict) -> str | None:
    """Why this cell may not run here (checked before any fetch), or None."""
    return terms_allow(lease_terms(policy), spec)
