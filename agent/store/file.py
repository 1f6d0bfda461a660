"""The store: one key layout, two backends (file:// here, s3:// in s3store), conditional writes.

    <prefix>/runs/<run_id>/manifest.json
    <prefix>/runs/<run_id>/results/<cell_id>/<agent_id>.json
    <prefix>/runs/<run_id>/logs/<cell_id>/<agent_id>/{build.log,stdout.txt,stderr.txt}
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import unquote, urlparse

ClashPolicy = Literal["reject", "replace", "keep-both"]
CLASH_POLICIES: tuple[str, ...] = get_args(ClashPolicy)
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


def recorded_ok(store, run_id: str, cell_id: str, hw_class: str, agent_id: str, others: bool) -> str | None:
    """The agent whose ok record of this cell is stored: this agent's own (a retried task
    never measures a cell twice), or with ``others`` any agent of the same hardware class
    (one result per class: a thawed agent leaves the cell alone)."""
    prefix = f"runs/{_part(run_id)}/results/{_part(cell_id)}/"
    own = f"{prefix}{_part(agent_id)}.json"
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


TMP_DIR = ".tmp"        # at the store root, outside every key; same filesystem, so link and rename stay atomic


class FileStore:
    """A directory tree; writes are atomic (temp file + link) and conditional.

    Temp files live in ``<root>/.tmp/``, never beside the keys, and each writer holds a lock
    on its temp file until it is done: a writer killed between write and link leaves a file
    whose lock is free, and the next open of the store removes it (``sweep_temp_files``)."""

    def __init__(self, root: Path):
        self.root = root
        self.url = root.resolve().as_uri()
        root.mkdir(parents=True, exist_ok=True)
        self.sweep_temp_files()

    def sweep_temp_files(self) -> int:
        """Remove the temp files of writers that died before they linked or removed them;
        a live writer's file is locked and stays. Returns how many were removed."""
        removed = 0
        try:
            names = os.listdir(self.root / TMP_DIR)
        except OSError:
            return 0
        for name in names:
            path = self.root / TMP_DIR / name
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.fstat(fd).st_ino == os.stat(path).st_ino:      # still the file that was locked
                    os.unlink(path)
                    removed += 1
            except OSError:
                pass                                                    # locked: its writer is alive
            finally:
                os.close(fd)
        return removed

    def _temp_file(self) -> tuple[int, str]:
        """A new temp file, open for writing and locked by this writer. A sweep may take a
        file in the instant between its creation and its lock; then it is gone, so try again."""
        tmp_dir = self.root / TMP_DIR
        tmp_dir.mkdir(exist_ok=True)
        while True:
            fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix=".tmp-")
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.fstat(fd).st_ino == os.stat(tmp).st_ino:
                    return fd, tmp
            except FileNotFoundError:
                pass
            os.close(fd)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        for part in parts:
            _part(part)
        return self.root.joinpath(*parts)

    def put(self, key: str, data: bytes, on_clash: ClashPolicy = "reject") -> str:
        """Write ``data`` at ``key``; returns the key written (another one under keep-both)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = self._temp_file()
        with os.fdopen(fd, "wb") as handle:       # closing it (last) releases the lock
            try:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
                return self._link(tmp, key, path, data, on_clash)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)

    def _link(self, tmp: str, key: str, path: Path, data: bytes, on_clash: ClashPolicy) -> str:
        """Give the written temp file its key, as ``on_clash`` says."""
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
            for alt in copy_keys(key):
                try:
                    os.link(tmp, self._path(alt))
                    return alt
                except FileExistsError:
                    continue
            raise StoreError(f"too many copies of {key}")

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
                      for p in base.rglob("*") if p.is_file() and not p.name.startswith((".tmp-", ".lock-")))

    def get_json(self, key: str) -> dict:
        return json.loads(self.get(key))

    def run_ids(self) -> list[str]:
        runs = self.root / "runs"
        return sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []

    def put_file(self, key: str, path: Path, on_clash: ClashPolicy = "replace") -> str:
        return self.put(key, Path(path).read_bytes(), on_clash)

    def list_versions(self, prefix: str) -> dict[str, str]:
        """key -> a version tag that changes whenever the object does (size and mtime here)."""
        out = {}
        for key in self.list(prefix):
            st = self.root.joinpath(*key.split("/")).stat()     # a listed file, even one no valid key names
            out[key] = f"{st.st_size}-{st.st_mtime_ns}"
        return out

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        """Content and a tag of this version, for a compare-and-swap with ``put_if``."""
        data = self.get(key)
        return data, hashlib.sha256(data).hexdigest()

    def put_if(self, key: str, data: bytes, version: str | None) -> bool:
        """Write only if the object is still the version read (or still absent when
        ``version`` is None); False when another writer came first. A lock file serializes
        the check and the swap between processes."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(".lock-" + path.name), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                current = hashlib.sha256(path.read_bytes()).hexdigest()
            except FileNotFoundError:
                current = None
            if current != version:
                return False
            self.put(key, data, on_clash="replace")
            return True


def open_store(url: str):
    """A store from its URL: ``file:///abs/dir``, ``file://rel/dir``, a plain path, or
    ``s3://bucket/prefix`` (endpoint from AWS_ENDPOINT_URL, credentials from boto3's chain)."""
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        path = unquote(parsed.netloc + parsed.path) if parsed.scheme else url
        return FileStore(Path(path).expanduser())
    if parsed.scheme == "s3":
        from agent.store.s3 import S3Store

        return S3Store(parsed.netloc, parsed.path)
    raise StoreError(f"unknown store URL scheme {parsed.scheme!r} in {url!r} (use file://DIR or s3://BUCKET/PREFIX)")
