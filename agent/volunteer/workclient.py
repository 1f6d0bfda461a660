"""The volunteer agent's side of the work API: JSON over verified HTTPS, nothing else.

Certificates are always verified: against the system roots, or against the coordinator's
own certificate (``--ca-cert``) for a self-signed one. There is no switch to turn that off.
"""
from __future__ import annotations

import http.client
import json
import os
import ssl
from pathlib import Path
from urllib.parse import urlsplit

TIMEOUT_S = 60
REASON_MAX = 300        # the longest release reason the work API takes (and none with steering characters)


class ApiError(RuntimeError):
    """The coordinator answered with an error (``status``) or could not be reached (status 0)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class WorkClient:
    def __init__(self, coordinator: str, key: str | None = None, ca_cert: str | None = None):
        parts = urlsplit(coordinator)
        if parts.scheme != "https" or not parts.hostname:
            raise ApiError(0, f"--coordinator must be an https:// URL, got {coordinator!r}")
        self.host, self.port = parts.hostname, parts.port or 443
        self.url, self.key = f"https://{parts.netloc}", key
        try:
            self.context = ssl.create_default_context(cafile=ca_cert)
        except (OSError, ssl.SSLError) as exc:
            raise ApiError(0, f"cannot use --ca-cert {ca_cert}: {exc}") from None

    def call(self, name: str, body: dict | None = None) -> dict:
        data = json.dumps(body or {}).encode()
        headers = {"Content-Type": "application/json", "Content-Length": str(len(data))}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        conn = http.client.HTTPSConnection(self.host, self.port, timeout=TIMEOUT_S, context=self.context)
        try:
            conn.request("POST", f"/v1/{name}", body=data, headers=headers)
            answer = conn.getresponse()
            raw = answer.read(4 << 20)
        except ssl.SSLCertVerificationError as exc:
            raise ApiError(0, f"{self.url}: certificate not trusted ({exc.verify_message}); "
                              "pass the coordinator's certificate with --ca-cert") from None
        except (OSError, http.client.HTTPException) as exc:
            raise ApiError(0, f"{self.url} unreachable: {exc}") from None
        finally:
            conn.close()
        try:
            payload = json.loads(raw or b"{}")
        except ValueError:
            payload = {"error": raw[:200].decode(errors="replace")}
        if answer.status != 200:
            raise ApiError(answer.status, str(payload.get("error") or f"HTTP {answer.status}"))
        return payload


def save_credentials(path: Path, values: dict) -> None:
    """Owner-only, written whole (a crash never leaves half a key)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(values, handle, indent=2)
    os.replace(tmp, path)


def load_credentials(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
