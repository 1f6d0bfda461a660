"""The store's key layout and the rules every backend shares (the same keys for file:// and
s3://, the clash rule, what counts as a stored ok record).

    <prefix>/runs/<run_id>/manifest.json
    <prefix>/runs/<run_id>/results/<cell_id>/<agent_id>.json
    <prefix>/runs/<run_id>/logs/<cell_id>/<agent_id>/{build.log,stdout.txt,stderr.txt}
"""
from __future__ import annotations

import base64
import hashlib
import json
import re

from agent.spec.clash import ClashPolicy
from agent.store.protocol import Store

_SAFE_PART = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


class StoreError(RuntimeError):
    pass


class Clash(StoreError):
    """A conditional write found the key taken and the policy was ``reject``."""


def sha256_b64(data: bytes) -> str:
    """An object's content checksum as stores and upload grants carry it: base64 of its SHA-256."""
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def key_part(value: str) -> str:
    """One segment of a store key: a plain name, never a path, a traversal or an empty part."""
    if not _SAFE_PART.match(value) or value in (".", ".."):
        raise StoreError(f"unsafe store key part {value!r}")
    return value


def manifest_key(run_id: str) -> str:
    return f"runs/{key_part(run_id)}/manifest.json"


def result_key(run_id: str, cell_id: str, agent_id: str) -> str:
    return f"runs/{key_part(run_id)}/results/{key_part(cell_id)}/{key_part(agent_id)}.json"


def results_prefix(run_id: str) -> str:
    return f"runs/{key_part(run_id)}/results/"


def log_key(run_id: str, cell_id: str, agent_id: str, name: str) -> str:
    return f"runs/{key_part(run_id)}/logs/{key_part(cell_id)}/{key_part(agent_id)}/{key_part(name)}"


MAX_COPIES = 1000


def copy_keys(key: str):
    """Where `keep-both` puts the 1st, 2nd, ... copy of ``key``: a.json -> a.1.json, a.2.json."""
    stem, dot, suffix = key.rpartition(".")
    for n in range(1, MAX_COPIES):
        yield f"{stem}.{n}.{suffix}" if dot and "/" not in suffix else f"{key}.{n}"


def stored_object(data: bytes) -> dict | None:
    """A stored record's JSON object, or None when the bytes are none (not JSON, an array,
    a string: what a broken writer or an attacker may leave at a record's key)."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def is_ok_record(record: dict | None) -> bool:
    return isinstance(record, dict) and record.get("status") == "ok"


def settle_clash(previous: dict | None, policy: ClashPolicy) -> ClashPolicy:
    """What to do when a record's key already holds other content: a failure record (or
    no record at all, see ``stored_object``) is superseded by a later attempt; an ok one is
    a clash the policy settles."""
    return policy if is_ok_record(previous) else "replace"


def recorded_ok(store: Store, run_id: str, cell_id: str, hw_class: str, agent_id: str, others: bool) -> str | None:
    """The agent whose ok record of this cell is stored: this agent's own (a retried task
    never measures a cell twice), or with ``others`` any agent of the same hardware class
    (one result per class: a thawed agent leaves the cell alone)."""
    prefix = f"runs/{key_part(run_id)}/results/{key_part(cell_id)}/"
    own = f"{prefix}{key_part(agent_id)}.json"
    for key in sorted(store.list(prefix), key=lambda k: k != own):
        if not key.endswith(".json") or (key != own and not others):
            continue
        try:
            rec = stored_object(store.get(key))
        except KeyError:
            continue
        if is_ok_record(rec) and (key == own or rec.get("hardware_class") == hw_class):
            return rec.get("agent_id")
    return None
