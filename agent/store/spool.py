"""Local spool: a record and its logs are written here first and leave only once stored.

A store that is down, or an agent killed mid-upload, costs time, never data: an entry is
removed only after the store acknowledged the record, and whatever is in the spool is
delivered by the next ``deliver`` or ``flush`` (the agent does one before each task).

Two ways out: straight to the store (file://, or s3:// with credentials on this machine),
or through presigned URLs the coordinator grants for exactly this entry's keys (an agent
without credentials). Either way the record goes last, so a stored record never points at
missing logs.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from agent.paths import cache_dir
from agent.spec.clash import ClashPolicy
from agent.store.backends import open_store
from agent.store.keys import Clash, log_key, result_key, settle_clash, stored_object

SPOOLED_NOTE = "spooled, not yet stored"
CLASH_MARK = "clash"            # an entry the store refused under `reject`: kept, not retried blindly
RETRY_DELAYS_S = (1, 2, 4, 8, 15)   # within one delivery; longer outages wait for the next flush

# items: [{"key", "sha256", "size", "kind": "log"|"record"}] -> one answer per item, see upload.py
Granter = Callable[[list[dict]], list[dict]]


def spool_root() -> Path:
    """HWMATRIX_SPOOL, else <cache>/spool."""
    explicit = os.environ.get("HWMATRIX_SPOOL")
    if explicit:
        Path(explicit).mkdir(parents=True, exist_ok=True)
        return Path(explicit)
    return cache_dir("spool")


def _entry(run_id: str, cell_id: str, agent_id: str) -> Path:
    return spool_root() / run_id / cell_id / agent_id


def spool_record(store_url: str, record: dict, logs: dict[str, Path], on_clash: ClashPolicy = "reject") -> Path:
    """Write the record (last, atomically) and copies of its logs into a spool entry."""
    entry = _entry(record["run_id"], record["cell_id"], record["agent_id"])
    entry.mkdir(parents=True, exist_ok=True)
    for name, path in logs.items():
        if path and Path(path).is_file():
            shutil.copyfile(path, entry / name)
    (entry / "store_url").write_text(store_url)
    (entry / "on_clash").write_text(on_clash)
    (entry / CLASH_MARK).unlink(missing_ok=True)
    tmp = entry / ".record.json.tmp"
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    os.replace(tmp, entry / "record.json")
    return entry


def _meta(entry: Path) -> tuple[dict, str, ClashPolicy]:
    policy = (entry / "on_clash").read_text().strip() if (entry / "on_clash").exists() else "reject"
    return json.loads((entry / "record.json").read_text()), (entry / "store_url").read_text().strip(), policy


def _logs(entry: Path) -> list[Path]:
    return [p for p in sorted(entry.iterdir())
            if p.name not in ("record.json", "store_url", "on_clash", CLASH_MARK) and not p.name.startswith(".")]


def _record_bytes(record: dict) -> bytes:
    return json.dumps(record, indent=1, sort_keys=True).encode()


def _put_direct(entry: Path, policy: ClashPolicy | None) -> str:
    record, store_url, entry_policy = _meta(entry)
    policy = policy or entry_policy
    store = open_store(store_url)
    run_id, cell_id, agent_id = record["run_id"], record["cell_id"], record["agent_id"]
    for log in _logs(entry):
        store.put_file(log_key(run_id, cell_id, agent_id, log.name), log, on_clash="replace")
    key, data = result_key(run_id, cell_id, agent_id), _record_bytes(record)
    try:
        return store.put(key, data, on_clash="reject")
    except Clash:
        settled = settle_clash(stored_object(store.get(key)), policy)
        if settled == "reject":
            raise
        return store.put(key, data, on_clash=settled)


def _put_granted(entry: Path, grant: Granter) -> str:
    from agent.store.upload import send_granted

    record, _, _ = _meta(entry)
    run_id, cell_id, agent_id = record["run_id"], record["cell_id"], record["agent_id"]
    logs = [(log_key(run_id, cell_id, agent_id, p.name), p.read_bytes(), "log") for p in _logs(entry)]
    items = logs + [(result_key(run_id, cell_id, agent_id), _record_bytes(record), "record")]
    return send_granted(items, grant)


def deliver(entry: Path, grant: Granter | None = None, policy: ClashPolicy | None = None,
            delays: tuple[float, ...] = RETRY_DELAYS_S) -> str:
    """Upload one spool entry (logs first, then the record), retrying with backoff while the
    store is unreachable, and remove it once stored; returns the record's key. A clash the
    policy rejects marks the entry and raises ``Clash``; the entry stays."""
    for delay in (*delays, None):
        try:
            key = _put_granted(entry, grant) if grant else _put_direct(entry, policy)
            shutil.rmtree(entry)
            return key
        except Clash as exc:
            (entry / CLASH_MARK).write_text(str(exc))
            raise
        except Exception:  # noqa: BLE001 - endpoint down, timeout, 5xx: wait and try again
            if delay is None:
                raise
            time.sleep(delay)


def spooled_record(run_id: str, cell_id: str, agent_id: str) -> dict | None:
    """The record of this cell that waits in this machine's spool, if any."""
    try:
        return json.loads((_entry(run_id, cell_id, agent_id) / "record.json").read_text())
    except (OSError, ValueError):
        return None


def is_spooled(record: dict) -> bool:
    """Whether this record still waits in this machine's spool."""
    return (_entry(record["run_id"], record["cell_id"], record["agent_id"]) / "record.json").exists()


def pending(run_id: str | None = None) -> list[Path]:
    """Spooled entries (of one run when asked)."""
    return sorted(p.parent for p in spool_root().glob(f"{run_id or '*'}/*/*/record.json"))


def flush(grant: Granter | None = None, policy: ClashPolicy | None = None, *, run_id: str | None = None,
          store_url: str | None = None, delays: tuple[float, ...] = ()) -> tuple[list[str], list[str]]:
    """Deliver everything spooled (only one run's or one store's entries when asked); entries
    marked as a clash wait for an explicit policy. Returns (delivered keys, errors); errors
    leave their entries in place."""
    delivered, errors = [], []
    for entry in pending(run_id):
        try:
            if store_url and _meta(entry)[1] != store_url:
                continue
            if (entry / CLASH_MARK).exists() and policy is None:
                errors.append(f"{entry}: {(entry / CLASH_MARK).read_text()} (give a clash policy to deliver it)")
                continue
            delivered.append(deliver(entry, grant, policy, delays))
        except Exception as exc:  # noqa: BLE001 - any store failure keeps the entry spooled
            errors.append(f"{entry}: {exc}")
    return delivered, errors
