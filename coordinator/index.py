"""Per-run index and a catalog of runs, so reports over a big store read a few objects
instead of listing and fetching every record for each query.

    <prefix>/runs/<run_id>/index.json   {"records": {key: [version, record]}, ...}
    <prefix>/catalog.json               {"runs": {run_id: summary}}  (matrix, refs, classes, dates)

Both are rebuilt from the truth (the records) and written with compare-and-swap (If-Match
on the version read, If-None-Match when new), so writers that finish at once never lose
each other's entries: the loser reads again and merges. An index that lags behind the
records (a spooled record delivered later) is caught up from one listing of the run's
results prefix, fetching only the records whose version changed.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

from agent.store import StoreError, _part, results_prefix

CATALOG_KEY = "catalog.json"
CAS_TRIES = 20
FETCH_THREADS = 16


def index_key(run_id: str) -> str:
    return f"runs/{_part(run_id)}/index.json"


def _read(store, key: str) -> tuple[dict | None, str | None]:
    """The object and its version; (None, None) when absent, (None, version) when unreadable
    (rewritten from the records, over that version)."""
    try:
        data, version = store.get_versioned(key)
    except KeyError:
        return None, None
    try:
        return json.loads(data), version
    except ValueError:
        return None, version


def refs_of(record: dict) -> set[str]:
    """The names a user may filter a record's ref by: the matrix's ref name, the git ref, the commit."""
    engine = record.get("engine") or {}
    ref = engine.get("ref") if isinstance(engine.get("ref"), dict) else {"value": engine.get("ref")}
    names = [(record.get("params") or {}).get("ref"), ref.get("name"), ref.get("value"), str(engine.get("commit") or "")[:12]]
    return {str(n) for n in names if n and not isinstance(n, (dict, list))}


def _fetch(store, keys: list[str]) -> dict[str, dict]:
    def one(key: str):
        try:
            return key, store.get_json(key)
        except (KeyError, ValueError):
            return key, None

    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        return {k: rec for k, rec in pool.map(one, keys) if rec is not None}


def _names_ref(names, ref: str) -> bool:
    """A ref filter matches a name exactly or as a prefix (a short commit hash)."""
    return any(name.startswith(ref) for name in names)


def _summary(records: list[dict], run_id: str) -> dict:
    dates = sorted(d for r in records for d in [(r.get("timestamps") or {}).get("finished")] if d)
    return {
        "run_id": run_id,
        "matrix": sorted({(r.get("matrix") or {}).get("name") or "" for r in records} - {""}),
        "refs": sorted(set().union(*map(refs_of, records))) if records else [],
        "classes": sorted({r.get("hardware_class") or "" for r in records} - {""}),
        "first": dates[0] if dates else None, "last": dates[-1] if dates else None, "records": len(records),
    }


def refresh_index(store, run_id: str) -> list[dict]:
    """The run's records, from its index caught up with one listing; the index (and the
    catalog entry) is written back only when something changed."""
    for _ in range(CAS_TRIES):
        index, version = _read(store, index_key(run_id))
        entries = (index or {}).get("records", {})
        listed = {k: v for k, v in store.list_versions(results_prefix(run_id)).items() if k.endswith(".json")}
        if not listed and index is None:
            return []                   # nothing recorded yet: write nothing
        stale = [k for k, v in listed.items() if k not in entries or entries[k][0] != v]
        fresh = {k: [listed[k], rec] for k, rec in _fetch(store, stale).items()}
        if not fresh and set(entries) == set(listed) and index is not None:
            return [rec for _, rec in entries.values()]
        merged = {k: fresh.get(k) or entries[k] for k in listed if k in fresh or k in entries}
        data = json.dumps({"run_id": run_id, "records": merged}, separators=(",", ":")).encode()
        if store.put_if(index_key(run_id), data, version):
            records = [rec for _, rec in merged.values()]
            _catalog_put(store, run_id, _summary(records, run_id))
            return records
    raise StoreError(f"the index of run {run_id} kept changing under us ({CAS_TRIES} tries)")


def _catalog_put(store, run_id: str, summary: dict) -> None:
    for _ in range(CAS_TRIES):
        catalog, version = _read(store, CATALOG_KEY)
        runs = (catalog or {}).get("runs", {})
        if runs.get(run_id) == summary:
            return
        runs[run_id] = summary
        data = json.dumps({"runs": runs}, indent=1, sort_keys=True).encode()
        if store.put_if(CATALOG_KEY, data, version):
            return
    raise StoreError(f"the catalog kept changing under us ({CAS_TRIES} tries)")


def catalog(store) -> dict[str, dict]:
    """run_id -> summary; runs the catalog does not know yet (an older store) are indexed now,
    found with one delimited listing of runs/ rather than a walk of every key."""
    known = (_read(store, CATALOG_KEY)[0] or {}).get("runs", {})
    for run_id in store.run_ids():
        if run_id not in known:
            records = refresh_index(store, run_id)
            known[run_id] = _summary(records, run_id)
    return known


def select_runs(runs: dict[str, dict], *, matrix: str | None = None, ref: str | None = None,
                hw_class: str | None = None, since: str | None = None, until: str | None = None) -> list[str]:
    """Run ids whose summary can hold records matching the filters (dates are ISO strings)."""
    chosen = []
    for run_id, s in sorted(runs.items()):
        if matrix and matrix not in s.get("matrix", []):
            continue
        if ref and not _names_ref(s.get("refs", []), ref):
            continue
        if hw_class and hw_class not in s.get("classes", []):
            continue
        if since and (s.get("last") or "") < since:
            continue
        if until and (s.get("first") or "9999") > until:
            continue
        chosen.append(run_id)
    return chosen


def matches(record: dict, *, matrix=None, ref=None, hw_class=None, since=None, until=None) -> bool:
    """The record-level filter, after `select_runs` picked the runs."""
    finished = (record.get("timestamps") or {}).get("finished") or ""
    return ((not matrix or (record.get("matrix") or {}).get("name") == matrix)
            and (not ref or _names_ref(refs_of(record), ref))
            and (not hw_class or record.get("hardware_class") == hw_class)
            and (not since or finished >= since) and (not until or finished <= until))
