"""Ray token authentication for every hwmatrix process that talks to a cluster.

Ray reads RAY_AUTH_MODE when it is imported, so `use_token` must run before anything
imports ray. The token is read from a file (RAY_AUTH_TOKEN_PATH), never passed in argv
where `ps` would show it.
"""
from __future__ import annotations

import os
from pathlib import Path

from agent.paths import default_token_path


class TokenError(RuntimeError):
    """No usable token file; the message says where to get one."""


def token_env(token_file: str | os.PathLike | None) -> dict[str, str]:
    """The variables that turn token authentication on, with the token from its file."""
    path = Path(token_file) if token_file else default_token_path()
    if not path.is_file() or not path.read_text().strip():
        raise TokenError(f"no Ray auth token at {path}: copy the head's token file here "
                         "(`hwmatrix cluster up` printed where it is), or pass --token-file")
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(path.resolve()), "RAY_USAGE_STATS_ENABLED": "0"}


def use_token(token_file: str | os.PathLike | None) -> None:
    """Set the token variables in this process (before ray is imported)."""
    os.environ.update(token_env(token_file))
