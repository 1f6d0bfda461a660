"""Per-run index and a catalog of runs, so reports over a big store read a few objects
instead of listing and fetching every record for each query.

    <prefix>/runs/<run_id>/index.json   {"format": 2, "records": {key: [version, record]},
                                         "skipped": {key: [version, why]}}
    <prefix>/catalog.json               {"runs": {run_id: summary}}  (matrix, refs, classes, dates)

Both are rebuilt from the truth (the records) and written with compare-and-swap (If-Match
on the version read, If-None-Match when new), so writers that finish at once never lose
each other's entries: the loser reads again and merges. An index that lags behind the
records (a spooled record delivered later) is caught up from one listing of the run's
results prefix, fetching only the records whose version changed.

A record is checked when it is fetched (coordinator.results.record_check): one that is not a usable
record is kept out of ``records`` and listed in ``skipped`` with why, so readers never see
it and it is not fetched again until it changes. An index of an older format is rebuilt.
"""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from agent.spec.printable import printable
from agent.store.keys import StoreError, key_part, results_prefix
from coordinator.results.record_check import BadRecord, parse_record

CATALOG_KEY = "catalog.json"
INDEX_FORMAT = 2            # 2: records are checked and bad ones listed under "skipped"
CAS_TRIES = 20
FETCH_THREADS = 16


def index_key(run_id: str) -> str:
    return f"runs/{key_part(run_id)}/index.json"


def _read(store, key: str) -> tuple[dict | None, str | None]:
    """The object and its version; (None, None) when absent, (None, version) when unreadable
    (rewritten from the records, over that version)."""
    try:
        data, version = store.get_versioned(key)
    except KeyError:
        return None, None
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        return None, version
    return (obj if isinstance(obj, dict) else None), version


@dataclass(frozen=True)
class Skipped:
    """A stored object under a run's results that is not a usable record, and why."""
    key: str
    reason: str

    def note(self) -> str:
        return f"skipped {printable(self.key)}: {self.reason}"


@dataclass
class RunRecords:
    records: list[dict]
    skipped: list[Skipped]


def refs_of(record: dict) -> set[str]:
    """The names a user may filter a record's ref by: the matrix's ref name, the git ref, the commit."""
    engine = record.get("engine") or {}
    ref = engine.get("ref") if isinstance(engine.get("ref"), dict) else {"value": engine.get("ref")}
    names = [(record.get("params") or {}).get("ref"), ref.get("name"), ref.get("value"), str(engine.get("commit") or "")[:12]]
    return {str(n) for n in names if n and not isinstance(n, (dict, list))}


def _fetch(store, keys: list[str]) -> dict[str, dict | str]:
    """key -> its checked record, or why it is not one; keys gone since the listing are left out."""
    def one(key: str):
        try:
            for part in key.split("/"):
                key_part(part)
        except StoreError:
            return key, "not a valid store key"
        try:
            return key, parse_record(store.get(key), key)
        except KeyError:
            return key, None
        except BadRecord as exc:
            return key, str(exc)
        except OSError as exc:             # a file store's unreadable file (a store's own errors are StoreError)
            return key, f"cannot be read: {printable(exc.strerror or exc)}"

    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        return {k: got for k, got in pool.map(one, keys) if got is not None}


def _entries(index: dict | None) -> tuple[dict, dict]:
    """The (records, skipped) entries of an index of this format ({}, {} for any other),
    without entries of the wrong shape (they are fetched again)."""
    if not index or index.get("format") != INDEX_FORMAT:
        return {}, {}
    records, skipped = index.get("records"), index.get("skipped")

    def shaped(entries, kind) -> dict:
        if not isinstance(entries, dict):
            return {}
        return {k: e for k, e in entries.items()
                if isinstance(e, list) and len(e) == 2 and isinstance(e[0], str) and isinstance(e[1], kind)}

    return shaped(records, dict), shaped(skipped, str)


def _names_ref(names, ref: str) -> bool:
    """A ref filter matches a name exactly or as a prefix (a short commit hash)."""
    return any(name.startswith(ref) for name in names)


def run_summary(records: list[dict], run_id: str) -> dict:
    dates = sorted(d for r in records for d in [(r.get("timestamps") or {}).get("finished")] if d)
    return {
        "run_id": run_id,
        "matrix": sorted({(r.get("matrix") or {}).get("name") or "" for r in records} - {""}),
        "refs": sorted(set().union(*map(refs_of, records))) if records else [],
        "classes": sorted({r.get("hardware_class") or "" for r in records} - {""}),
        "first": dates[0] if dates else None, "last": dates[-1] if dates else None, "records": len(records),
    }


def refresh_index(store, run_id: str, write: bool = True) -> list[dict]:
    """The run's usable records (see read_run)."""
    return read_run(store, run_id, write).records


def read_run(store, run_id: str, write: bool = True) -> RunRecords:
    """The run's records and the objects skipped as unusable, from its index caught up with
    one listing; the index (and the catalog entry) is written back only when something changed,
    and never with ``write=False`` (a read-only reader such as `hwmatrix serve`)."""
    for _ in range(CAS_TRIES):
        index, version = _read(store, index_key(run_id))
        entries, bad = _entries(index)
        listed = {k: v for k, v in store.list_versions(results_prefix(run_id)).items() if k.endswith(".json")}
        if not listed and index is None:
            return RunRecords([], [])               # nothing recorded yet: write nothing
        known = {**entries, **bad}
        stale = [k for k, v in listed.items() if k not in known or known[k][0] != v]
        fetched = _fetch(store, stale)
        if not fetched and set(known) == set(listed) and index is not None and index.get("format") == INDEX_FORMAT:
            return _run_records(entries, bad)
        good, skipped = {}, {}
        for k in listed:
            got = fetched.get(k)
            if isinstance(got, dict):
                good[k] = [listed[k], got]
            elif isinstance(got, str):
                skipped[k] = [listed[k], got]
            elif k in entries:
                good[k] = entries[k]
            elif k in bad:
                skipped[k] = bad[k]
        if not write:
            return _run_records(good, skipped)
        data = json.dumps({"run_id": run_id, "format": INDEX_FORMAT, "records": good, "skipped": skipped},
                          separators=(",", ":")).encode()
        if store.put_if(index_key(run_id), data, version):
            found = _run_records(good, skipped)
            _catalog_put(store, run_id, run_summary(found.records, run_id))
            return found
    raise StoreError(f"the index of run {run_id} kept changing under us ({CAS_TRIES} tries)")


def _run_records(good: dict, skipped: dict) -> RunRecords:
    return RunRecords([rec for _, rec in good.values()], [Skipped(k, why) for k, (_, why) in sorted(skipped.items())])


def _catalog_put(store, run_id: str, summary: dict) -> None:
    for _ in range(CAS_TRIES):
        catalog, version = _read(store, CATALOG_KEY)
        runs = (catalog or {}).get("runs")
        runs = runs if isinstance(runs, dict) else {}
        if runs.get(run_id) == summary:
            return
        runs[run_id] = summary
        data = json.dumps({"runs": runs}, indent=1, sort_keys=True).encode()
        if store.put_if(CATALOG_KEY, data, version):
            return
    raise StoreError(f"the catalog kept changing under us ({CAS_TRIES} tries)")


def catalog(store, skipped: list[Skipped] | None = None, write: bool = True) -> dict[str, dict]:
    """run_id -> summary; runs the catalog does not know yet (an older store) are indexed now,
    found with one delimited listing of runs/ rather than a walk of every key. A run whose
    name is no valid run id is left out (and added to ``skipped``). ``write=False`` reads
    without writing an index or the catalog back."""
    runs = (_read(store, CATALOG_KEY)[0] or {}).get("runs")
    known = {k: s for k, s in runs.items() if _summary_ok(s)} if isinstance(runs, dict) else {}
    for run_id in store.run_ids():
        if run_id in known:
            continue
        try:
            key_part(run_id)
        except StoreError:
            if skipped is not None:
                skipped.append(Skipped(f"runs/{run_id}/", "not a valid run id"))
            continue
        known[run_id] = run_summary(refresh_index(store, run_id, write), run_id)
    return known


def _summary_ok(summary) -> bool:
    """A catalog entry select_runs can read (else the run is indexed again)."""
    return (isinstance(summary, dict)
            and all(isinstance(summary.get(k), list) and all(isinstance(x, str) for x in summary[k])
                    for k in ("matrix", "refs", "classes"))
            and all(summary.get(k) is None or isinstance(summary.get(k), str) for k in ("first", "last")))


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
