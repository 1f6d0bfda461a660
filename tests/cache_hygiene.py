"""What a test run leaves in the shared cache: builds and git mirrors of the temp repos it
planted (bisect and fault tests make dozens) are of no use once those repos are gone, and
they added ~4 GB a run. ``forget_sources_under`` removes them at the end of the session."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

BUILD_DIRS = ("builds", "sandboxed/builds")


def _drop(entry: Path) -> None:
    shutil.rmtree(entry, ignore_errors=True)
    entry.with_name(entry.name + ".lock").unlink(missing_ok=True)


def forget_sources_under(cache: Path, base: Path) -> list[Path]:
    """Delete the build trees and repo mirrors in ``cache`` whose source lies under ``base``."""
    prefix = Path(base).resolve().as_uri() + "/"
    removed = []
    for sub in BUILD_DIRS:
        for state in (cache / sub).glob("*/build.json"):
            try:
                repo_id = json.loads(state.read_text())["key"]["repo_id"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if str(repo_id).startswith(prefix):
                _drop(state.parent)
                removed.append(state.parent)
    for config in (cache / "repos").glob("*/config"):
        try:
            text = config.read_text()
        except OSError:
            continue
        if f"url = {prefix}" in text:
            _drop(config.parent)
            removed.append(config.parent)
    return removed
