"""Keep the agent's cache under a disk limit: least recently used first, never an entry in
use (its lock held) or used within the last hour. Two limits: a volunteer owner's
``max_disk_gb`` over the whole cache, and ``$HWMATRIX_BUILD_CACHE_GB`` over the build trees of
every agent (each build keeps its source and object files, ~200 MB for llama.cpp, so a
bisect or a stream of pull requests would otherwise fill the disk)."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import stat
import time
from contextlib import ExitStack
from pathlib import Path

# each child is one entry; sandboxed/ccache holds one ccache per untrusted source and ISA
PRUNED_DIRS = ("builds", "sandboxed/builds", "sandboxed/ccache", "work")
MODEL_DIRS = ("models", "sandboxed/models")             # each file (recursively) is one entry
RECENT_S = 3600.0     # entries used this recently may belong to a cell another agent is running
BUILD_CACHE_GB = 20.0     # default $HWMATRIX_BUILD_CACHE_GB; 0 turns the limit off


def _tree_usage(path: Path, seen: set) -> tuple[int, float]:
    """Bytes (each inode once) and when ``path`` was last used, links not followed."""
    total, latest = 0, 0.0
    stack = [path]
    while stack:
        current = stack.pop()
        try:
            st = current.lstat()
        except OSError:
            continue
        is_dir = stat.S_ISDIR(st.st_mode)
        # a file's atime says it was used (relatime: at least daily); a directory's is
        # bumped by any listing, this one included, so only its mtime counts
        latest = max(latest, st.st_mtime, st.st_atime if stat.S_ISREG(st.st_mode) else 0.0)
        if stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
        if is_dir:
            try:
                stack.extend(current.iterdir())
            except OSError:
                pass
    return total, latest


def cache_size(cache_root: Path) -> int:
    """Bytes under a folder (apparent sizes, each inode once, links not followed)."""
    return _tree_usage(Path(cache_root), set())[0]


def _candidates(cache_root: Path) -> list[Path]:
    entries = []
    for sub in PRUNED_DIRS:
        folder = cache_root / sub
        if folder.is_dir():
            entries += [p for p in folder.iterdir() if p.suffix != ".lock"]
    for sub in MODEL_DIRS:
        folder = cache_root / sub
        if folder.is_dir():
            entries += [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink() and p.suffix != ".lock"]
    return entries


def _lock_files(entry: Path) -> list[Path]:
    """The cache_lock files guarding ``entry`` (agent code uses ``with_suffix('.lock')``)."""
    names = {entry.with_name(entry.name + ".lock")}
    if entry.suffix:
        names.add(entry.with_suffix(".lock"))
    return [p for p in names if p.is_file()]


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


def _remove_unless_locked(entry: Path) -> bool:
    """Delete ``entry`` while holding its locks; False when another process holds one."""
    try:
        with ExitStack() as stack:
            for lock in _lock_files(entry):
                handle = stack.enter_context(open(lock, "rb"))
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
            _remove(entry)
            return True
    except OSError:
        return False


def _evict(entries: list[tuple[float, int, Path]], total: int, max_bytes: int, recent_s: float) -> list[Path]:
    """Remove (last_used, size, entry) least recently used first until ``total`` fits."""
    removed = []
    cutoff = time.time() - recent_s
    for last_used, size, entry in sorted(entries, key=lambda e: (e[0], str(e[2]))):
        if total <= max_bytes:
            break
        if last_used > cutoff:
            continue
        if _remove_unless_locked(entry):
            total -= size
            removed.append(entry)
    return removed


def _lock_time(entry: Path, last_used: float) -> float:
    """A lock file's mtime counts as a use: build cache hits touch it."""
    for lock in _lock_files(entry):
        try:
            last_used = max(last_used, lock.stat().st_mtime)
        except OSError:
            pass
    return last_used


def prune(cache_root: Path, max_bytes: int, recent_s: float = RECENT_S) -> list[Path]:
    """Delete least recently used builds, models and work dirs until the cache fits in
    ``max_bytes``. Entries whose lock is held, or used in the last ``recent_s`` seconds, are
    kept. Returns what was deleted."""
    cache_root = Path(cache_root)
    seen: set = set()
    total = cache_size(cache_root)
    if total <= max_bytes:
        return []
    entries = []
    for entry in _candidates(cache_root):
        size, last_used = _tree_usage(entry, seen)
        entries.append((_lock_time(entry, last_used), size, entry))
    return _evict(entries, total, max_bytes, recent_s)


def build_cache_limit() -> int | None:
    """Bytes the build trees may hold, from ``$HWMATRIX_BUILD_CACHE_GB`` (GB, default 20);
    None when it is 0 (no limit). A value that is not a number is a ValueError naming it."""
    raw = os.environ.get("HWMATRIX_BUILD_CACHE_GB", "").strip()
    try:
        gb = float(raw) if raw else BUILD_CACHE_GB
    except ValueError:
        raise ValueError(f"$HWMATRIX_BUILD_CACHE_GB={raw!r} is not a number of GB (0 = no limit)") from None
    if gb < 0 or gb != gb:
        raise ValueError(f"$HWMATRIX_BUILD_CACHE_GB={raw!r} must be 0 (no limit) or a positive number of GB")
    return int(gb * 1e9) or None


def build_bytes(entry: Path) -> int:
    """A build tree's size: the ``bytes`` its build.json recorded, else measured."""
    try:
        return int(json.loads((entry / "build.json").read_text())["bytes"])
    except (OSError, ValueError, KeyError, TypeError):
        return cache_size(entry)


def prune_builds(builds: Path, max_bytes: int, recent_s: float = RECENT_S) -> list[Path]:
    """Delete least recently used build trees under ``builds`` until they fit in
    ``max_bytes``; a tree's last use is its build.json or lock mtime, so this reads one small
    file per build instead of walking every tree."""
    entries = []
    for entry in Path(builds).iterdir():
        if entry.suffix == ".lock" or not entry.is_dir():
            continue
        try:
            used = (entry / "build.json").stat().st_mtime
        except OSError:         # still building (or gone): its directory is brand new
            try:
                used = entry.stat().st_mtime
            except OSError:
                continue
        entries.append((_lock_time(entry, used), build_bytes(entry), entry))
    total = sum(size for _, size, _ in entries)
    return _evict(entries, total, max_bytes, recent_s) if total > max_bytes else []
