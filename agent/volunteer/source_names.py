"""One spelling per engine source, so the owner's allowed repos and a cell's repo compare
equal: the policy file's repos are checked and normalised here, and the offer rule
(agent.volunteer.offer) names a cell's source the same way.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from agent.engine.sources import normalize_repo

_PYPI_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")
_SCP_LIKE = re.compile(r"^(?P<user>[^@/:\s]+@)?(?P<host>[^/:\s]+):(?P<path>[^/].*)$")


def _pypi_id(package: str) -> str:
    """PEP 503 name: Llama_CPP.python and llama-cpp-python are one package."""
    return "pypi:" + re.sub(r"[-_.]+", "-", package.strip()).lower()


def normalize_source(source: str) -> str:
    """One spelling per source, so the owner's list and a cell's repo compare equal:
    lowercase scheme and host, no credentials, no trailing ``/`` or ``.git``; local paths
    become file:// URIs (as agent.engine.sources does); ``pypi:<name>`` gets the PEP 503 name."""
    text = source.strip()
    if text.lower().startswith("pypi:"):
        return _pypi_id(text[5:])
    if "://" in text:
        parts = urlsplit(text)
        host = (parts.hostname or "").lower()
        if parts.port is not None:
            host += f":{parts.port}"
        if parts.username and parts.scheme.lower() not in ("http", "https"):
            host = f"{parts.username}@{host}"       # ssh://git@host: the user is part of the address
        path = _strip_git(parts.path)
        return urlunsplit((parts.scheme.lower(), host, path, parts.query, parts.fragment))
    match = _SCP_LIKE.match(text)
    if match and not text.startswith(("/", "~", ".")):
        return f"{match['user'] or ''}{match['host'].lower()}:{_strip_git(match['path'])}"
    return normalize_repo(text)          # a local path: the file:// URL agent.engine.sources mirrors it as


def _strip_git(path: str) -> str:
    path = path.rstrip("/")
    if path.endswith(".git"):
        path = path[:-4].rstrip("/")
    return path


def check_source(value: str) -> str:
    """A repo as an owner may list it (git URL, absolute path or pypi:<package>), normalised;
    ValueError says why not."""
    text = value.strip()
    if text.lower().startswith("pypi:"):
        if not _PYPI_NAME.match(text[5:]):
            raise ValueError(f"{value!r}: 'pypi:' must be followed by a package name")
    elif "://" in text:
        parts = urlsplit(text)
        if parts.scheme.lower() not in ("https", "http", "ssh", "git", "file"):
            raise ValueError(f"{value!r}: scheme {parts.scheme!r} is not one of https, http, ssh, git, file")
        if parts.scheme.lower() != "file" and not parts.hostname:
            raise ValueError(f"{value!r} has no host")
        if parts.query or parts.fragment:
            raise ValueError(f"{value!r}: a repo URL takes no ?query or #fragment")
    elif not (text.startswith(("/", "~")) or (_SCP_LIKE.match(text) and "@" in text)):
        raise ValueError(f"{value!r} is not a git URL (https://host/owner/repo), "
                         "an absolute path or pypi:<package>")
    return normalize_source(text)


def source_id(engine: dict) -> str:
    """The engine's source as the policy names it: ``pypi:<package>`` for a registry sdist,
    else the normalised repo URL. Raises ValueError for an engine with neither."""
    if not isinstance(engine, dict):
        raise ValueError("engine is not a mapping")   # noqa: TRY004 - one error type for a bad spec
    sdist = engine.get("sdist")
    if sdist is not None:
        package = sdist.get("package") if isinstance(sdist, dict) else None
        if not isinstance(package, str) or not package.strip():
            raise ValueError("engine sdist has no package name")
        return _pypi_id(package)
    repo = engine.get("repo")
    if not isinstance(repo, str) or not repo.strip():
        raise ValueError("engine has neither repo nor sdist")
    return normalize_source(repo)
