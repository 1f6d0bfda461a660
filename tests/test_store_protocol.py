"""The store protocol: both backends satisfy it, a URL scheme picks its backend from the
registry, and callers ask the backend what it can do (grants, the credentials agents must
not get) instead of reading the URL scheme. A backend registered here proves it."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import ClassVar

import pytest

from agent.store.backends import BACKENDS, backend, no_credentials_env, open_store, register_backend
from agent.store.file import FileStore
from agent.store.keys import StoreError
from agent.store.protocol import GrantingStore, Store
from agent.store.s3 import S3Store
from coordinator.cli.main import main
from tests.conftest import REPO
from tests.test_cli import GOOD


class VaultStore(FileStore):
    """A third backend: a file store behind ``vault://DIR`` whose credentials live in VAULT_TOKEN."""
    grants: ClassVar[bool] = True
    no_credentials_env: ClassVar[dict[str, str]] = {"VAULT_TOKEN": ""}
    url_form: ClassVar[str] = "vault://DIR"

    @classmethod
    def from_url(cls, url: str) -> VaultStore:
        return cls(Path(url.removeprefix("vault://")))

    def presign_put(self, key, sha256, expires_s, *, overwrite=False, log=False) -> dict:
        return {"key": key, "url": f"https://vault.invalid/{key}", "headers": {}}


@pytest.fixture
def vault():
    register_backend("vault", VaultStore)
    yield VaultStore
    del BACKENDS["vault"]


def test_both_backends_satisfy_the_store_protocol_and_only_s3_grants(tmp_path):
    file_store, s3_store = FileStore(tmp_path), S3Store("bucket", "prefix")
    assert isinstance(file_store, Store) and isinstance(s3_store, Store)
    assert isinstance(s3_store, GrantingStore) and not isinstance(file_store, GrantingStore)
    assert S3Store.grants and not FileStore.grants
    assert FileStore.no_credentials_env == {}
    assert S3Store.no_credentials_env["AWS_SECRET_ACCESS_KEY"] == ""


def test_the_url_scheme_picks_the_backend_from_the_registry(tmp_path, vault):
    assert backend(tmp_path.as_uri()) is FileStore and backend(str(tmp_path)) is FileStore
    assert backend("s3://bucket/prefix") is S3Store
    opened = open_store(f"vault://{tmp_path / 'v'}")
    assert type(opened) is VaultStore and isinstance(opened, GrantingStore)
    with pytest.raises(StoreError, match=r"unknown store URL scheme 'ftp'.*\(use file://DIR or s3://BUCKET/PREFIX "
                                         r"or vault://DIR\)"):
        open_store("ftp://x/y")


def test_a_registered_backends_credential_variable_is_blanked_for_agents(vault):
    from coordinator.cluster.dispatch import without_store_credentials

    env = without_store_credentials()["env_vars"]
    assert env["VAULT_TOKEN"] == "" and env == no_credentials_env()
    assert env["AWS_ACCESS_KEY_ID"] == env["AWS_SECRET_ACCESS_KEY"] == env["AWS_SESSION_TOKEN"] == ""
    assert env["AWS_EC2_METADATA_DISABLED"] == "true"


def test_volunteers_queue_asks_the_backend_whether_it_grants_not_the_url_scheme(tmp_path, vault, capsys):
    matrix = tmp_path / "m.yaml"
    matrix.write_text(GOOD)
    state = ["--state", str(tmp_path / "ledger")]
    assert main(["volunteers", "queue", str(matrix), "--store", (tmp_path / "s").as_uri(), *state]) == 2
    assert "give a --store that grants them (s3://BUCKET/PREFIX, vault://DIR)" in capsys.readouterr().err
    assert main(["volunteers", "queue", str(matrix), "--store", f"vault://{tmp_path / 'v'}", *state]) == 0
    assert "queued 1 cells of run" in capsys.readouterr().out


def _scheme_tests(path: Path) -> list[int]:
    """Lines where code (not a docstring or message) tests a string for a store URL scheme."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "startswith":
            args = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
            if any(a.startswith(("s3:", "file:")) for a in args):
                lines.append(node.lineno)
    return lines


def test_no_caller_reads_the_store_url_scheme():
    found = {str(p.relative_to(REPO)): _scheme_tests(p) for top in ("agent", "coordinator")
             for p in sorted((REPO / top).rglob("*.py")) if "store" not in p.relative_to(REPO).parts}
    assert {path: lines for path, lines in found.items() if lines} == {}
