"""What a store backend is: the methods every caller uses (the run driver, agents, the
index, the work API) and the capabilities they ask of it instead of reading its URL scheme.

A backend registers its URL scheme in ``agent.store.backends``; keys and the clash rule are
the same for all (``agent.store.keys``)."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

from agent.spec.clash import ClashPolicy


@runtime_checkable
class Store(Protocol):
    url: str
    # can hand out upload grants (presigned PUTs, ``GrantingStore``): then agents upload
    # through the coordinator and hold no credentials of this store
    grants: ClassVar[bool]
    # the environment an agent gets so that it holds none of this backend's credentials:
    # their variables blank, other sources of them (an instance role) off
    no_credentials_env: ClassVar[Mapping[str, str]]
    url_form: ClassVar[str]          # how its URL is written, for messages: "s3://BUCKET/PREFIX"

    @classmethod
    def from_url(cls, url: str) -> Store: ...

    def put(self, key: str, data: bytes, on_clash: ClashPolicy = "reject") -> str:
        """Write ``data`` at ``key`` if free (or identical), else as ``on_clash`` says;
        returns the key written (another one under keep-both)."""

    def put_file(self, key: str, path: Path, on_clash: ClashPolicy = "replace") -> str: ...

    def get(self, key: str) -> bytes:
        """The object's bytes; KeyError when there is none."""

    def get_json(self, key: str) -> dict: ...

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        """Content and a version tag, for a compare-and-swap with ``put_if``."""

    def put_if(self, key: str, data: bytes, version: str | None) -> bool:
        """Write only if the object is still ``version`` (still absent for None)."""

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> list[str]: ...

    def list_versions(self, prefix: str) -> dict[str, str]:
        """key -> a tag that changes whenever the object does, from one listing."""

    def run_ids(self) -> list[str]: ...


@runtime_checkable
class GrantingStore(Store, Protocol):
    """A store whose ``grants`` is true."""

    def presign_put(self, key: str, sha256: str, expires_s: int, *, overwrite: bool = False,
                    log: bool = False) -> dict:
        """A URL that can PUT exactly this content (``sha256``: keys.sha256_b64) at exactly this
        key, for ``expires_s``: {"key", "url", "headers"}. ``log``: a raw log, which the store
        may expire sooner than records."""
