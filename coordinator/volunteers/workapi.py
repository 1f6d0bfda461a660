"""The volunteers' work API: HTTPS + JSON beside the Ray coordinator.

Volunteer agents enroll with a one-time code, then pull leases for cells that fit their
hardware and their owner's terms, heartbeat them, and upload through presigned PUTs signed
here (they hold no store credentials). Every call but enrollment carries the agent's key
(``Authorization: Bearer``); the ledger (``coordinator/volunteers/ledger.py``) checks it.

HTTP (Starlette on uvicorn, TLS, deadlines, limits, rate limits) is
``coordinator/volunteers/workapi_http.py``; this module is what each call does.
"""
from __future__ import annotations

import datetime
import json
import sys
import threading
from functools import lru_cache

from agent.volunteer.offer import terms_allow
from agent.store.backends import open_store
from agent.store.keys import StoreError, result_key
from coordinator.results.crosscheck import cross_check
from coordinator.planning.hardware_match import unmet
from coordinator.volunteers.lease_record import LeasedCell, checked_record, set_aside
from coordinator.results.record_check import BadRecord
from coordinator.cluster.uploads import Granter
from coordinator.volunteers.volunteer_input import InputError, check_profile, check_reason, profile_change
from coordinator.volunteers.ledger import (DEFAULT_LEASE_S, Caller, Ledger, Refused, fingerprint,
                                   profile_changed_message)


def fits(cell: dict, profile: dict, terms: dict) -> bool:
    """Hardware the cell asks for (the fit rule a local plan applies: hardware_match.unmet),
    and the owner's terms (repos, fork PRs, GPUs)."""
    spec, need = json.loads(cell["spec"]), json.loads(cell["requirement"])
    if terms_allow(terms, spec) is not None:
        return False
    return unmet(need.get("hardware"), need.get("gpus"), profile) is None


@lru_cache(maxsize=16)
def _store(url: str):
    return open_store(url)


class WorkApi:
    """What each call does, apart from HTTP."""

    def __init__(self, ledger: Ledger, lease_s: float = DEFAULT_LEASE_S, replicate: float = 0.1):
        self.ledger, self.lease_s, self.replicate = ledger, lease_s, replicate

    def enroll(self, body: dict, client: str) -> dict:
        """Spend a code (the HTTP layer throttles an address's failures, never a valid code)."""
        profile = body.get("profile") if isinstance(body.get("profile"), dict) else {}
        name = str(body.get("name") or "agent")
        agent_id, key, state = self.ledger.enroll(str(body.get("code", "")), name, profile)
        log("enrolled", agent=agent_id, name=name, state=state, hardware_class=profile.get("hardware_class"),
            client=client)
        return {"agent_id": agent_id, "key": key, "fingerprint": fingerprint(key), "state": state}

    def lease(self, caller: Caller, body: dict) -> dict:
        """A cell for the agent's enrolled hardware: the profile it sends only tells whether
        the machine changed, which takes the admin's approval again."""
        profile, hw_class = self.ledger.enrolled(caller.agent_id)
        claimed = body.get("profile")
        if claimed is not None:
            try:
                check_profile(claimed)
            except InputError as exc:
                raise Refused(400, str(exc)) from None
            change = profile_change(profile, claimed)
            if change:
                back = self.ledger.hold_for_approval(caller.agent_id, claimed, change)
                log("profile changed: needs approval again", agent=caller.agent_id, change=change, leases_back=back)
                raise Refused(409, profile_changed_message(caller.agent_id, change))
        terms = body.get("terms") if isinstance(body.get("terms"), dict) else {}
        got = self.ledger.lease(caller, hw_class, lambda cell: fits(cell, profile, terms), self.lease_s)
        if got is None:
            return {"lease": None, "retry_s": 30}
        spec = got["spec"]
        if got["role"] == "replica":
            spec["one_per_class"] = False      # the point is a second record of the class
        log("leased", cell=got["cell_id"], role=got["role"], agent=caller.agent_id, hardware_class=hw_class)
        return {"lease": got["lease_id"], "role": got["role"], "spec": spec, "lease_s": self.lease_s,
                "heartbeat_s": max(1.0, self.lease_s / 4)}

    def heartbeat(self, caller: Caller, body: dict) -> dict:
        self.ledger.heartbeat(caller, str(body.get("lease", "")), self.lease_s)
        return {"ok": True}

    def release(self, caller: Caller, body: dict) -> dict:
        try:
            reason = check_reason(body.get("reason") or "released")
        except InputError as exc:
            raise Refused(400, str(exc)) from None
        self.ledger.release(caller, str(body.get("lease", "")), reason)
        log("gave back a cell", agent=caller.agent_id, reason=reason)
        return {"ok": True}

    def grant(self, caller: Caller, body: dict) -> dict:
        claim = self.ledger.held(caller, str(body.get("lease", "")))
        items = body.get("items")
        if not isinstance(items, list) or len(items) > 100 or not all(isinstance(i, dict) for i in items):
            raise Refused(400, "items: a list of at most 100 objects")
        spec = json.loads(claim["spec"])
        try:
            granter = Granter(_store(claim["store_url"]), claim["run_id"], {claim["cell_id"]},
                              spec.get("on_clash", "reject"))
            return {"answers": granter.grant(caller.agent_id, items)}
        except StoreError as exc:
            raise Refused(503, f"the store is unavailable: {exc}") from None

    def complete(self, caller: Caller, body: dict) -> dict:
        """Closed only once the record in the store is the lease's (coordinator/volunteers/lease_record.py):
        validated first, then cross-checked (a replica), then finished. A refused record is
        set aside, the cell goes back to the queue for another agent, and the agent's track
        record takes a disagreement."""
        claim = self.ledger.held(caller, str(body.get("lease", "")))
        store = _store(claim["store_url"])
        key = result_key(claim["run_id"], claim["cell_id"], caller.agent_id)
        try:
            raw = store.get(key)
        except KeyError:
            raise Refused(409, "no record of this cell from this agent in the store yet") from None
        except StoreError as exc:
            raise Refused(503, f"cannot read the record back: {exc}") from None
        try:
            record = checked_record(raw, self._lease_of(claim, caller.agent_id))
        except BadRecord as exc:
            self.ledger.release(caller, claim["lease_id"], f"record refused: {exc}")
            self.ledger.note_check(claim["run_id"], claim["cell_id"], claim["hardware_class"], [caller.agent_id],
                                   "disagree", f"record refused: {exc}")
            try:
                set_aside(store, key, raw, str(exc))
            except StoreError as failed:
                log("could not set a refused record aside", key=key, error=str(failed))
            log("record refused", agent=caller.agent_id, cell=claim["cell_id"], reason=str(exc))
            raise Refused(422, f"record refused: {exc}") from None
        if claim["role"] == "replica":
            self._cross_check(claim, record, store)
        done = self.ledger.finish(caller, claim["lease_id"], record["status"], self.replicate)
        log("recorded", agent=caller.agent_id, cell=claim["cell_id"], role=claim["role"], status=record["status"])
        return {"ok": True, "state": done["state"]}

    def _lease_of(self, claim: dict, agent_id: str) -> LeasedCell:
        return LeasedCell(claim["run_id"], claim["cell_id"], agent_id, frozenset(self.ledger.fingerprints(agent_id)),
                           claim["hardware_class"], json.loads(claim["spec"]))

    def _cross_check(self, claim: dict, record: dict, store) -> None:
        """The replica's verdict, noted before either claim closes. A primary record that is
        gone, invalid or cannot be compared is a "disagree" against the primary's agent (or
        both, when nobody can be told): a check never comes to nothing."""
        ids = (claim["run_id"], claim["cell_id"], claim["hardware_class"])
        first = self.ledger.primary_agent(*ids)
        agent = record["agent_id"]
        if first is None:
            self.ledger.note_check(*ids, [agent], "unknown", "no finished primary claim to compare with")
            return
        blame = [first]
        try:
            other = checked_record(store.get(result_key(claim["run_id"], claim["cell_id"], first)),
                                   self._lease_of(claim, first))
        except KeyError:
            verdict, detail = "disagree", f"{first}'s primary record is gone from the store"
        except StoreError as exc:
            raise Refused(503, f"cannot read the primary record to cross-check: {exc}") from None
        except BadRecord as exc:
            verdict, detail = "disagree", f"{first}'s primary record is invalid: {exc}"
        else:
            blame = None
            try:
                checked = cross_check(other, record)
                verdict, detail = checked.verdict, checked.detail
            except Exception as exc:  # noqa: BLE001 - a check that cannot be computed still counts
                verdict, detail = "disagree", f"the cross-check could not be computed: {type(exc).__name__}: {exc}"
        self.ledger.note_check(*ids, [first, agent], verdict, detail, blame=blame)
        log("cross-check", cell=claim["cell_id"], agents=[first, agent], verdict=verdict, detail=detail)

    def rotate(self, caller: Caller, key: str) -> dict:
        new = self.ledger.rotate(caller, key)
        log(f"{caller.agent_id} rotated its key")
        return {"key": new, "fingerprint": fingerprint(new)}


_log_lock = threading.Lock()


def log(message: str, **fields) -> None:
    """One JSON object a line on stderr. JSON escapes every control character and, with
    ``ensure_ascii``, every non-ASCII one (bidi overrides too): a name, class or reason from
    an agent stays inside its field, so it can neither forge a line nor drive a terminal."""
    line = json.dumps({"t": datetime.datetime.now().isoformat(timespec="milliseconds"), "msg": message, **fields},
                      ensure_ascii=True, default=str)
    with _log_lock:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
