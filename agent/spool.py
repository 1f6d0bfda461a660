"""Local spool: a record and its logs are written here first and leave only once stored.

A store that is down, or an agent killed mid-upload, costs time, never data: whatever is
in the spool is delivered by the next ``deliver`` or ``flush``.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from agent.paths import cache_dir
from agent.store import Clash, log_key, open_store, result_key


def spool_root() -> Path:
    """HWMATRIX_SPOOL, else <cache>/spool."""
    explicit = os.environ.get("HWMATRIX_SPOOL")
    if explicit:
        Path(explicit).mkdir(parents=True, exist_ok=True)
        return Path(explicit)
    return cache_dir("spool")


def spool_record(store_url: str, record: dict, logs: dict[str, Path]) -> Path:
    """Write the record (last, atomically) and copies of its logs into a spool entry."""
    entry = spool_root() / record["run_id"] / record["cell_id"] / record["agent_id"]
    entry.mkdir(parents=True, exist_ok=True)
    for name, path in logs.items():
        if path and Path(path).is_file():
            shutil.copyfile(path, entry / name)
    (entry / "store_url").write_text(store_url)
    tmp = entry / ".record.json.tmp"
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    os.replace(tmp, entry / "record.json")
    return entry


def _upload(entry: Path) -> str:
    record = json.loads((entry / "record.json").read_text())
    store = open_store((entry / "store_url").read_text())
    run_id, cell_id, agent_id = record["run_id"], record["cell_id"], record["agent_id"]
    for log in sorted(entry.iterdir()):
        if log.name not in ("record.json", "store_url") and not log.name.startswith("."):
            store.put(log_key(run_id, cell_id, agent_id, log.name), log.read_bytes(), on_clash="replace")
    key = result_key(run_id, cell_id, agent_id)
    data = json.dumps(record, indent=1, sort_keys=True).encode()
    try:
        written = store.put(key, data, on_clash="reject")
    except Clash:
        # A failed earlier attempt may be replaced; a good measurement is never dropped.
        previous = store.get_json(key)
        policy = "replace" if previous.get("status") != "ok" else "keep-both"
        written = store.put(key, data, on_clash=policy)
    shutil.rmtree(entry)
    return written


def deliver(entry: Path) -> str:
    """Upload one spool entry (logs first, then the record) and remove it; returns the key."""
    return _upload(entry)


def pending() -> list[Path]:
    return sorted(p.parent for p in spool_root().glob("*/*/*/record.json"))


def flush() -> tuple[list[str], list[str]]:
    """Deliver everything spooled; (delivered keys, errors) - errors leave entries in place."""
    delivered, errors = [], []
    for entry in pending():
        try:
            delivered.append(_upload(entry))
        except Exception as exc:  # noqa: BLE001 - any store failure keeps the entry spooled
            errors.append(f"{entry}: {exc}")
    return delivered, errors
