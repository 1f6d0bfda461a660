"""Where an agent keeps its caches: one root so tests, CI and users can share or isolate them."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """HWMATRIX_CACHE, else $XDG_CACHE_HOME/hwmatrix, else ~/.cache/hwmatrix."""
    explicit = os.environ.get("HWMATRIX_CACHE")
    if explicit:
        root = Path(explicit)
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hwmatrix"
    root.mkdir(parents=True, exist_ok=True)
    return root


def cache_dir(*parts: str) -> Path:
    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def default_store_url() -> str:
    """The embedded default store: a file:// tree under the user's data directory."""
    explicit = os.environ.get("HWMATRIX_STORE")
    if explicit:
        return explicit
    data = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "hwmatrix" / "store"
    return data.resolve().as_uri()


def default_token_path() -> Path:
    """Where `cluster up` keeps the Ray auth token: $HWMATRIX_TOKEN_FILE, else
    $XDG_CONFIG_HOME/hwmatrix/ray-token. Never in the repo, a matrix or a record."""
    explicit = os.environ.get("HWMATRIX_TOKEN_FILE")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "hwmatrix" / "ray-token"
