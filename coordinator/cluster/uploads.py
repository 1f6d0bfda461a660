"""Upload grants: the coordinator holds the store credentials, agents hold none. An agent
asks for the keys of a cell it was handed, with each object's SHA-256; the coordinator
checks the key belongs to that cell and this run, looks at what the store already holds,
applies the clash policy, and answers with a short-lived presigned PUT per key.

On Ray the request travels through `UploadDesk`, a small actor beside the driver: the
agent's call waits there until the driver's loop has signed the answer, so the credentials
never leave the driver process.
"""
from __future__ import annotations

import asyncio
import base64
import re

import ray

from agent.spec.clash import ClashPolicy
from agent.store.keys import (Clash, StoreError, copy_keys, is_ok_record, recorded_ok, settle_clash, sha256_b64,
                              stored_object)
from coordinator.results.record_check import MAX_RECORD_BYTES

GRANT_EXPIRES_S = 300
_RESULT = re.compile(r"^runs/(?P<run>[^/]+)/results/(?P<cell>[^/]+)/(?P<agent>[^/]+)\.json$")
_LOG = re.compile(r"^runs/(?P<run>[^/]+)/logs/(?P<cell>[^/]+)/(?P<agent>[^/]+)/(?P<name>[A-Za-z0-9._-]{1,100})$")
MAX_LOG_BYTES = 5 * 1024 ** 3           # one presigned PUT; S3's own limit


class Granter:
    """Signs uploads for the cells of one run; everything else is refused."""

    def __init__(self, store, run_id: str, cell_ids: set[str], on_clash: ClashPolicy = "reject",
                 expires_s: int = GRANT_EXPIRES_S):
        self.store, self.run_id, self.cell_ids = store, run_id, set(cell_ids)
        self.on_clash, self.expires_s = on_clash, expires_s
        self.clashes: list[str] = []

    def grant(self, agent_id: str, items: list[dict]) -> list[dict]:
        return [self._one(agent_id, item) for item in items]

    def _one(self, agent_id: str, item: dict) -> dict:
        key, sha = str(item.get("key", "")), str(item.get("sha256", ""))
        match = _RESULT.match(key) or _LOG.match(key)
        if not match:
            return {"key": key, "refused": "not a key of this store's layout"}
        if match["run"] != self.run_id or match["cell"] not in self.cell_ids or match["agent"] != agent_id:
            return {"key": key, "refused": f"not a key of a cell handed to {agent_id} in run {self.run_id}"}
        if item.get("kind") == "recorded" and match.re is _RESULT:     # asked before measuring: done already?
            try:
                return {"key": key, "recorded_by": recorded_ok(self.store, self.run_id, match["cell"],
                                                               str(item.get("hw_class")), agent_id,
                                                               bool(item.get("others")))}
            except StoreError as exc:
                return {"key": key, "refused": str(exc)}
        try:
            if len(base64.b64decode(sha, validate=True)) != 32:
                raise ValueError
        except ValueError:
            return {"key": key, "refused": "no SHA-256 of the content"}
        size = item.get("size", 0)
        if type(size) is not int or size < 0:
            return {"key": key, "refused": "size: the object's length in bytes, a whole number"}
        try:
            if match.re is _LOG:
                if size > MAX_LOG_BYTES:
                    return {"key": key, "refused": "log larger than one PUT may carry"}
                return self.store.presign_put(key, sha, self.expires_s, overwrite=True, log=True)
            if size > MAX_RECORD_BYTES:
                return {"key": key, "refused": f"record larger than the {MAX_RECORD_BYTES >> 20} MiB a record may hold"}
            return self._record(key, sha)
        except StoreError as exc:
            return {"key": key, "refused": str(exc)}

    def _record(self, key: str, sha: str) -> dict:
        """Free key: conditional PUT. Same bytes there: done. Other bytes: a failure record (or
        bytes that are no record object) is superseded; an ok one is a clash the policy settles."""
        try:
            existing = self.store.get(key)
        except KeyError:
            return self.store.presign_put(key, sha, self.expires_s)
        if sha256_b64(existing) == sha:
            return {"key": key, "done": True}
        previous = stored_object(existing)
        settled = settle_clash(previous, self.on_clash)
        if is_ok_record(previous):
            self.clashes.append(f"{key}: an ok record is already stored with other content (policy {self.on_clash})")
        if settled == "reject":
            return {"key": key, "refused": str(Clash(f"{key} exists with other content; policy reject")),
                    "clash": True}
        if settled == "replace":
            return self.store.presign_put(key, sha, self.expires_s, overwrite=True)
        for alt in copy_keys(key):
            if not self.store.exists(alt):
                return self.store.presign_put(alt, sha, self.expires_s)
        return {"key": key, "refused": "too many copies"}


@ray.remote(num_cpus=0)
class UploadDesk:
    """Where agents' grant requests wait for the driver (which alone can sign)."""

    def __init__(self) -> None:
        self.waiting: dict[int, tuple[str, list[dict], asyncio.Future]] = {}
        self.next = 0

    async def ask(self, agent_id: str, items: list[dict]) -> list[dict]:
        self.next += 1
        future = asyncio.get_running_loop().create_future()
        self.waiting[self.next] = (agent_id, items, future)
        return await asyncio.wait_for(future, timeout=300)

    async def take(self) -> list[tuple[int, str, list[dict]]]:
        for n in [n for n, (_, _, future) in self.waiting.items() if future.done()]:   # timed out
            del self.waiting[n]
        return [(n, agent, items) for n, (agent, items, _) in self.waiting.items()]

    async def answer(self, answers: dict[int, list[dict]]) -> None:
        for n, answer in answers.items():
            waiting = self.waiting.pop(n, None)
            if waiting and not waiting[2].done():
                waiting[2].set_result(answer)


def serve_desk(desk, granter: Granter) -> int:
    """Sign whatever waits at the desk (called from the driver's loop); returns how many."""
    requests = ray.get(desk.take.remote(), timeout=10)
    if requests:
        ray.get(desk.answer.remote({n: granter.grant(agent, items) for n, agent, items in requests}), timeout=10)
    return len(requests)
