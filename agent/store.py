"""The store: one key layout, several backends (file:// here), conditional writes.

    <prefix>/runs/<run_id>/manifest.json
    <prefix>/runs/<run_id>/results/<cell_id>/<agent_id>.json
    <prefix>/runs/<run_id>/logs/<cell_id>/<agent_id>/{build.log,stdout.txt,stderr.txt}
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlparse

ClashPolicy = Literal["reject", "replace", "keep-both"]
_SAFE_PART = re.compile(r"^[A-Za-z0-9._-]{1,200}$")


class StoreError(RuntimeError):
    pass


class Clash(StoreError):
    """A conditional write found the key taken and the policy was ``reject``."""


def _part(value: str) -> str:
    if not _SAFE_PART.match(value) or value in (".", ".."):
        raise StoreError(f"unsafe store key part {value!r}")
    return value


def manifest_key(run_id: str) -> str:
    return f"runs/{_part(run_id)}/manifest.json"


def result_key(run_id: str, cell_id: str, agent_id: str) -> str:
    return f"runs/{_part(run_id)}/results/{_part(cell_id)}/{_part(agent_id)}.json"


def results_prefix(run_id: str) -> str:
    return f"runs/{_part(run_id)}/results/"


def log_key(run_id: str, cell_id: str, agent_id: str, name: str) -> str:
    return f"runs/{_part(run_id)}/logs/{_part(cell_id)}/{_part(agent_id)}/{_part(name)}"


def recorded_by_another(store, run_id: str, cell_id: str, hw_class: str, agent_id: str) -> str | None:
    """The agent that already has an ok record of this cell for this hardware class, if
    any: a retried or unfrozen agent then leaves the result alone (one result per class)."""
    prefix = f"runs/{_part(run_id)}/results/{_part(cell_id)}/"
    for key in store.list(prefix):
        if key.endswith(f"/{_part(agent_id)}.json") or not key.endswith(".json"):
            continue
        try:
            rec = store.get_json(key)
        except (KeyError, ValueError):
            continue
        if rec.get("status") == "ok" and rec.get("hardware_class") == hw_class:
            return rec.get("agent_id")
    return None


class FileStore:
    """A directory tree; writes are atomic (temp file + link) and conditional."""

    def __init__(self, root: Path):
        self.root = root
        self.url = root.resolve().as_uri()
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        for part in parts:
            _part(part)
        return self.root.joinpath(*parts)

    def put(self, key: str, data: bytes, on_clash: ClashPolicy = "reject") -> str:
        """Write ``data`` at ``key``; returns the key written (another one under keep-both)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if on_clash == "replace":
                os.replace(tmp, path)
                return key
            try:
                os.link(tmp, path)          # fails if the key exists: a conditional write
                return key
            except FileExistsError:
                if path.read_bytes() == data:
                    return key              # an idempotent retry, not a clash
                if on_clash == "reject":
                    raise Clash(f"{key} exists in {self.url} with other content")
                for n in range(1, 10_000):
                    alt = path.with_name(f"{path.stem}.{n}{path.suffix}")
                    try:
                        os.link(tmp, alt)
                        return key.rsplit("/", 1)[0] + "/" + alt.name
                    except FileExistsError:
                        continue
                raise StoreError(f"too many copies of {key}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self.root.joinpath(*[p for p in prefix.split("/") if p])
        if not base.is_dir():
            return []
        return sorted(str(p.relative_to(self.root)).replace(os.sep, "/")
                      for p in base.rglob("*") if p.is_file() and not p.name.startswith(".tmp-"))

    def get_json(self, key: str) -> dict:
        return json.loads(self.get(key))


def open_store(url: str):
    """A store from its URL: ``file:///abs/dir``, ``file://rel/dir`` or a plain path."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        path = unquote(parsed.netloc + parsed.path) if parsed.scheme else url
        return FileStore(Path(path).expanduser())
    if parsed.scheme == "s3":
        raise StoreError("s3:// stores are not available yet in this version; use file://DIR")
    raise StoreError(f"unknown store URL scheme {parsed.scheme!r} in {url!r} (use file://DIR)")
