"""The store as the site sees it: every run's summary, checked records and manifest, and
every object that was skipped as unusable (listed on the pages, never fatal)."""
from __future__ import annotations

import gc
import json
from dataclasses import dataclass, field

from agent.store.keys import StoreError, key_part, manifest_key, results_prefix
from coordinator.results.history import history, series_keys
from coordinator.site.compare import AxisIndex, axis_indexes
from coordinator.results.index import Skipped, catalog, read_run, run_summary


@dataclass
class SiteView:
    store_url: str
    runs: dict[str, dict] = field(default_factory=dict)           # run_id -> catalog summary
    records: dict[str, list[dict]] = field(default_factory=dict)  # run_id -> checked records
    manifests: dict[str, dict] = field(default_factory=dict)      # run_id -> manifest (when readable)
    skipped: list[Skipped] = field(default_factory=list)

    _histories: list | None = None
    _axes: list[AxisIndex] | None = None
    pages: dict[str, str] = field(default_factory=dict)         # path -> rendered page, for `serve`

    def all_records(self) -> list[dict]:
        return [r for recs in self.records.values() for r in recs]

    def histories(self) -> list[tuple]:
        """(SeriesKey, History) of every series, each from its own records (one grouping pass,
        not a scan of the store per series); computed once per view."""
        if self._histories is None:
            records = self.all_records()
            groups: dict[str, list[dict]] = {}
            keys = series_keys(records)
            wanted = {(k.hw_class, json.dumps(k.params, sort_keys=True, default=str)) for k in keys}
            for rec in records:
                group = (str(rec.get("hardware_class")),
                         json.dumps({k: v for k, v in (rec.get("params") or {}).items() if k != "ref"},
                                    sort_keys=True, default=str))
                if group in wanted:
                    groups.setdefault(group, []).append(rec)
            self._histories = [(k, history(groups[(k.hw_class, json.dumps(k.params, sort_keys=True, default=str))], k))
                               for k in keys]
        return self._histories

    def axes(self) -> list[AxisIndex]:
        """Every axis the compare page offers, its records grouped once per view."""
        if self._axes is None:
            self._axes = axis_indexes(self.all_records())
        return self._axes


def settle() -> None:
    """Move the objects read so far out of the cycle collector's reach. A full collection over
    the millions of objects of 100,000 records took 2 s, in the middle of whichever request or
    page set it off. Records hold no cycles, so reference counting still frees an old view."""
    gc.collect()
    gc.freeze()


LOG_CAP = 1 << 20       # bytes of a raw log a page shows (static copy or served live)


def log_text(store, key: str) -> bytes | None:
    """A record's raw log as the site shows it: cut at LOG_CAP, saying so; None when unreadable."""
    try:
        data = store.get(key)
    except (KeyError, StoreError, OSError):
        return None
    if len(data) > LOG_CAP:
        data = data[:LOG_CAP] + f"\n[hwmatrix: cut at {LOG_CAP} of {len(data)} bytes]\n".encode()
    return data


def _manifest(store, run_id: str, skipped: list[Skipped]) -> dict | None:
    key = manifest_key(run_id)
    try:
        data = store.get(key)
    except KeyError:
        return None
    try:
        manifest = json.loads(data)
    except (ValueError, RecursionError):
        manifest = None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("cells", []), list):
        skipped.append(Skipped(key, "not a run manifest (not a JSON object with a cells list)"))
        return None
    return manifest


def load(store, write: bool = True) -> SiteView:
    """Every run of the store; ``write=False`` for a reader that must not write indexes."""
    view = SiteView(store.url)
    try:
        view.runs = catalog(store, view.skipped, write=write)
    except StoreError as exc:
        view.skipped.append(Skipped("catalog.json", str(exc)))
    for run_id in sorted(view.runs):
        _load_run(store, view, run_id, write)
    return view


def _load_run(store, view: SiteView, run_id: str, write: bool) -> None:
    found = read_run(store, run_id, write)
    view.records[run_id] = found.records
    view.skipped += found.skipped
    view.runs[run_id] = run_summary(found.records, run_id)
    manifest = _manifest(store, run_id, view.skipped)
    if manifest is not None:
        view.manifests[run_id] = manifest


def refreshed(store, old: SiteView, listings: dict[str, dict]) -> SiteView | None:
    """A new view where a run's listing changed (records added, replaced, removed) or a run
    appeared, re-reading only those runs, read-only; None when nothing changed. ``listings``
    (run_id -> key -> version) is updated in place."""
    changed = []
    for run_id in store.run_ids():
        listing = store.list_versions(results_prefix(run_id))
        if listings.get(run_id) != listing:
            listings[run_id] = listing
            changed.append(run_id)
    if not changed:
        return None
    view = SiteView(old.store_url, dict(old.runs), dict(old.records), dict(old.manifests),
                    [s for s in old.skipped if not any(s.key.startswith(f"runs/{r}/") for r in changed)])
    for run_id in changed:
        try:
            key_part(run_id)
        except StoreError:
            continue
        _load_run(store, view, run_id, write=False)
    return view
