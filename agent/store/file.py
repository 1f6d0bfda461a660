"""The file:// backend of the store: a directory tree, atomic and conditional writes.

Its keys are ``agent.store.keys``'s layout, relative to the root directory.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import ClassVar
from urllib.parse import unquote, urlparse

from agent.spec.clash import ClashPolicy
from agent.store.keys import Clash, StoreError, key_part, copy_keys

TMP_DIR = ".tmp"        # at the store root, outside every key; same filesystem, so link and rename stay atomic


class FileStore:
    """A directory tree; writes are atomic (temp file + link) and conditional.

    Temp files live in ``<root>/.tmp/``, never beside the keys, and each writer holds a lock
    on its temp file until it is done: a writer killed between write and link leaves a file
    whose lock is free, and the next open of the store removes it (``sweep_temp_files``)."""

    grants: ClassVar[bool] = False              # an agent writes a file:// store itself
    no_credentials_env: ClassVar[dict[str, str]] = {}
    url_form: ClassVar[str] = "file://DIR"

    @classmethod
    def from_url(cls, url: str) -> FileStore:
        """``file:///abs/dir``, ``file://rel/dir`` or a plain path."""
        parsed = urlparse(url)
        return cls(Path(unquote(parsed.netloc + parsed.path) if parsed.scheme else url).expanduser())

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
            key_part(part)
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

