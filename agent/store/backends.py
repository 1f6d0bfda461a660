"""Which backend serves a store URL: one entry per URL scheme. A new backend is a class
that satisfies ``agent.store.protocol.Store`` and one ``register_backend`` line here."""
from __future__ import annotations

from urllib.parse import urlparse

from agent.store.file import FileStore
from agent.store.keys import StoreError
from agent.store.protocol import Store
from agent.store.s3 import S3Store

BACKENDS: dict[str, type[Store]] = {}


def register_backend(scheme: str, backend: type[Store]) -> None:
    BACKENDS[scheme] = backend


register_backend("", FileStore)          # a plain path
register_backend("file", FileStore)
register_backend("s3", S3Store)


def url_forms() -> str:
    """How the registered stores' URLs are written, for help texts and messages."""
    return " or ".join(dict.fromkeys(b.url_form for b in BACKENDS.values()))


def backend(url: str) -> type[Store]:
    """The backend class of ``url``: what it can do (``grants``), before or without opening it."""
    scheme = urlparse(url).scheme
    if scheme not in BACKENDS:
        raise StoreError(f"unknown store URL scheme {scheme!r} in {url!r} (use {url_forms()})")
    return BACKENDS[scheme]


def open_store(url: str) -> Store:
    """A store from its URL: ``file:///abs/dir``, ``file://rel/dir``, a plain path, or
    ``s3://bucket/prefix`` (endpoint from AWS_ENDPOINT_URL, credentials from boto3's chain)."""
    return backend(url).from_url(url)


def no_credentials_env() -> dict[str, str]:
    """The environment of an agent that holds no store credentials, whichever backend it
    might reach: every registered backend's credential variables blank."""
    env: dict[str, str] = {}
    for store in BACKENDS.values():
        env.update(store.no_credentials_env)
    return env
