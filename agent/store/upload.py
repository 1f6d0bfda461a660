"""Uploads through presigned URLs: the agent holds no store credentials; the coordinator
grants a URL per key that can write only that key, only this content (its SHA-256 is part
of the signature) and, for a record, only if the key is still free.

A grant answer is one of:
  {"key", "url", "headers"}   PUT the bytes there (``key`` may differ under keep-both)
  {"key", "done": True}       the store already holds exactly these bytes
  {"key", "refused": why, "clash": bool}
"""
from __future__ import annotations

import http.client
import ssl
from urllib.parse import urlsplit

from agent.store.keys import sha256_b64
from agent.store.keys import Clash, StoreError

ROUNDS = 3


def put_url(url: str, headers: dict[str, str], data: bytes, timeout: float = 30,
            context: ssl.SSLContext | None = None) -> tuple[int, str]:
    """One PUT (http.client: urllib would add a Content-Type the signature does not cover)."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout, context=context)
    elif parts.scheme == "http":
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    else:
        raise StoreError(f"refusing to upload to a {parts.scheme!r} URL")
    try:
        conn.request("PUT", f"{parts.path}?{parts.query}", body=data,
                     headers={**headers, "Content-Length": str(len(data))})
        answer = conn.getresponse()
        return answer.status, answer.read(2000).decode(errors="replace")
    finally:
        conn.close()


def send_granted(items: list[tuple[str, bytes, str]], grant) -> str:
    """Upload (key, bytes, kind) items in order through granted URLs; returns the key the
    record (the last item) was stored under. A 412 means the key got taken meanwhile (often
    by our own earlier attempt whose answer was lost): ask again, the coordinator compares."""
    todo, stored = list(items), {}
    for _ in range(ROUNDS):
        answers = grant([{"key": key, "sha256": sha256_b64(data), "size": len(data), "kind": kind}
                         for key, data, kind in todo])
        again = []
        for (key, data, kind), answer in zip(todo, answers):
            if answer.get("refused"):
                error = Clash if answer.get("clash") else StoreError
                raise error(f"{key}: {answer['refused']}")
            if not answer.get("done"):
                status, body = put_url(answer["url"], answer["headers"], data)
                if status == 412:
                    again.append((key, data, kind))
                    continue
                if status >= 300:
                    raise StoreError(f"the store refused {key} (HTTP {status}): {body[:300]}")
            stored[key] = answer.get("key", key)
        if not again:
            return stored[items[-1][0]]
        todo = again
    raise StoreError(f"{todo[0][0]} kept changing under us after {ROUNDS} rounds")
