"""`hwmatrix volunteers serve --port 0` in its own process, for the tests that speak to the
work API (tests/test_volunteers.py, tests/test_workapi_http.py and those built on them).
bench/workapi.py keeps its own: it serves from another checkout and imports no tests."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

PROFILE = {"hardware_class": "test-class-0001", "hostname": "donor", "cpu": {"vendor": "AMD"}, "gpus": {"count": 0}}
TERMS = {"repos": ["pypi:llama-cpp-python"], "allow_fork_prs": False, "max_gpus": 0}


class ServedWorkApi:
    """The server with its own ledger under ``tmp_path``, its stderr (the JSON log) in a file;
    ``url``, ``port`` and ``ca`` (its self-signed certificate) once it serves."""

    def __init__(self, tmp_path: Path, *args: str, env: dict | None = None):
        self.state = tmp_path / "ledger"
        self.log_path = tmp_path / "server.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "coordinator.cli", "volunteers", "serve", "--state", str(self.state),
             "--port", "0", *args],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=self._log, text=True)
        self.url = next((line.split()[1] for line in self.proc.stdout if line.startswith("serving ")), None)
        assert self.url, f"server did not start: {self.log()}"
        self.port = int(self.url.rsplit(":", 1)[1])
        self.ca = str(self.state / "tls" / "cert.pem")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
