"""The volunteer loop: a donated box pulls cells over HTTPS, within its owner's policy.

The owner's policy decides, not the coordinator: before each cell the loop checks the time
window, today's hours, idleness and disk; each leased cell is checked against the policy
again *before anything is fetched* (a coordinator that ignores the terms we sent gets the
cell back, unfetched). Builds and runs of the repo's code happen in the bubblewrap sandbox;
without one, the agent refuses to take work at all rather than run it bare.
"""
from __future__ import annotations

import signal
import socket
import sys
import threading
import time
from pathlib import Path

from pydantic import ValidationError

from agent.engine import sandbox
from agent.spec.cellspec import CellSpec
from agent.paths import cache_root
from agent.engine.pipeline import run_cells
from agent.volunteer.offer import lease_terms, refusal
from agent.volunteer.policy import Ledger, PolicyError, load_policy, pause_reason
from agent.spec.printable import without_steering
from agent.machine.probe import probe
from agent.engine.sources import published_commits_only
from agent.store.keys import StoreError
from agent.volunteer.workclient import REASON_MAX, ApiError, WorkClient, load_credentials, save_credentials


class VolunteerError(RuntimeError):
    """A reason to stop that the owner must act on (printed as one line, exit 2)."""


def enrollment_code(code: str | None, code_file: str | None) -> str | None:
    """The one-time code from --code, from a file (--code-file) or from stdin (--code -), so
    that it need not show in `ps`; read only when the agent enrolls."""
    if code_file is not None:
        try:
            with open(code_file) as handle:
                line = handle.readline(200)
        except OSError as exc:
            raise VolunteerError(f"cannot read the enrollment code from {code_file}: {exc.strerror}") from None
        where = code_file
    elif code == "-":
        line, where = sys.stdin.readline(200), "stdin"
    else:
        return code
    if not line.strip():
        raise VolunteerError(f"no enrollment code in {where} (one line, from `hwmatrix volunteers invite`)")
    return line.strip()


def one_line(text: str) -> str:
    """A reason as the work API takes it: one line without steering characters, bounded."""
    return without_steering(str(text))[:REASON_MAX]


def _say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


class Volunteer:
    def __init__(self, coordinator: str, policy_path: str, state_dir: Path, ca_cert: str | None,
                 name: str | None = None, poll_s: float = 30.0):
        try:
            self.policy = load_policy(policy_path)
        except PolicyError as exc:
            raise VolunteerError(str(exc)) from None
        problem = sandbox.problem()
        if problem:
            raise VolunteerError(f"refusing to take untrusted work without a sandbox: {problem}")
        self.coordinator, self.ca_cert, self.poll_s = coordinator.rstrip("/"), ca_cert, poll_s
        self.state_dir = state_dir
        self.creds_path = state_dir / "credentials.json"
        self.hours = Ledger(state_dir / "hours.json")
        self.name = name or socket.gethostname()
        self.profile = probe().model_dump(mode="json")
        self._last_note: str | None = None

    def note(self, message: str) -> None:
        """Say a waiting reason once, not every poll."""
        if message != self._last_note:
            _say(message)
            self._last_note = message

    # ------------------------------------------------------------ enrollment and keys

    def enroll(self, code: str | None, code_file: str | None = None) -> dict:
        creds = load_credentials(self.creds_path)
        if creds and creds.get("coordinator") == self.coordinator:
            return creds
        if creds:
            raise VolunteerError(f"{self.creds_path} belongs to {creds.get('coordinator')}; "
                                 "use another --state dir for another coordinator")
        code = enrollment_code(code, code_file)
        if not code:
            raise VolunteerError("not enrolled yet: pass --code, --code-file or --code - "
                                 "(from `hwmatrix volunteers invite` on the coordinator)")
        try:
            answer = WorkClient(self.coordinator, None, self.ca_cert).call(
                "enroll", {"code": code, "name": self.name, "profile": self.profile})
        except ApiError as exc:
            raise VolunteerError(f"enrollment refused: {exc}") from None
        creds = {"coordinator": self.coordinator, "agent_id": answer["agent_id"], "key": answer["key"],
                 "fingerprint": answer["fingerprint"]}
        save_credentials(self.creds_path, creds)
        _say(f"enrolled as {creds['agent_id']} (key {creds['fingerprint']}, {answer['state']}); "
             f"the key is kept in {self.creds_path}")
        return creds

    def _rotate(self, client: WorkClient, creds: dict) -> None:
        """New key first saved, then used: the old one stays valid for a grace period."""
        try:
            answer = client.call("rotate")
        except ApiError as exc:
            self.note(f"key rotation failed, will retry: {exc}")
            return
        creds.update(key=answer["key"], fingerprint=answer["fingerprint"])
        save_credentials(self.creds_path, creds)
        client.key = answer["key"]
        _say(f"rotated the key (now {answer['fingerprint']})")

    # ------------------------------------------------------------ the loop

    def run(self, code: str | None, max_cells: int | None = None, exit_when_idle: bool = False,
            code_file: str | None = None) -> int:
        creds = self.enroll(code, code_file)
        client = WorkClient(self.coordinator, creds["key"], self.ca_cert)
        done, backoff = 0, self.poll_s
        while max_cells is None or done < max_cells:
            reason = pause_reason(self.policy, self.hours, cache_root())
            if reason:
                self.note(f"paused: {reason}")
                time.sleep(self.poll_s)
                continue
            try:
                answer = client.call("lease", {"profile": self.profile, "terms": lease_terms(self.policy)})
                backoff = self.poll_s
            except ApiError as exc:
                if exc.status == 401:
                    raise VolunteerError(f"the coordinator refused this agent's key ({exc}); "
                                         f"enroll again: delete {self.creds_path} and pass a new --code") from None
                if exc.status == 409:           # this machine changed: the admin must approve it again
                    self.note(f"waiting for the coordinator's admin: {exc}")
                else:
                    self.note(f"waiting: {exc}")
                if exc.status in (403, 409):    # awaiting approval: ask again at the usual pace
                    time.sleep(self.poll_s)
                    continue
                time.sleep(backoff)             # unreachable or failing: back off
                backoff = min(backoff * 2, 600)
                continue
            if answer.get("rotate"):
                self._rotate(client, creds)
            if not answer.get("lease"):
                if exit_when_idle:
                    _say("no work for this machine; exiting (--exit-when-idle)")
                    return 0
                self.note("no work for this machine right now")
                time.sleep(min(float(answer.get("retry_s") or self.poll_s), self.poll_s))
                continue
            self._last_note = None
            if self.work(client, creds, answer):
                done += 1
        return 0

    def work(self, client: WorkClient, creds: dict, answer: dict) -> bool:
        """One leased cell: checked, run in the sandbox, recorded, reported. True if it ran."""
        lease = answer["lease"]
        offered = answer.get("spec") if isinstance(answer.get("spec"), dict) else {}
        why = refusal(self.policy, offered)
        if why is None and (offered.get("model") or {}).get("path") is not None:
            # a coordinator's path means nothing here, and would name a file of this machine
            why = "model files by path are not run for a coordinator; only generated models"
        spec = None
        if why is None:
            try:
                spec = CellSpec.model_validate(answer["spec"])
            except ValidationError as exc:
                first = exc.errors()[0]
                why = f"invalid cell spec: {'.'.join(map(str, first['loc']))}: {first['msg']}"
        if why:
            _say(f"declined a cell: {why}")
            self._tell(client, "release", {"lease": lease, "reason": f"owner policy: {why}"})
            return False
        if spec.gpus is None and self.policy.gpus == 0:
            spec = spec.model_copy(update={"gpus": 0})     # "as is" would leave the owner's GPUs visible
        _say(f"cell {spec.cell_id} ({answer.get('role')}): {spec.engine.name}@{spec.ref.name} {spec.tool}")
        beating = _Heartbeat(client, lease, float(answer.get("heartbeat_s") or 30))
        beating.start()
        started = time.monotonic()
        try:
            with sandbox.confined(), published_commits_only(not self.policy.allow_fork_prs):
                records = run_cells([spec], _progress, grant=_granter(client, lease),
                                   identity={"agent_id": creds["agent_id"],
                                             "agent_key_fingerprint": creds["fingerprint"]})
        except BaseException:
            beating.stop()
            self._tell(client, "release", {"lease": lease, "reason": "the agent stopped mid-cell"})
            raise
        finally:
            self.hours.add(time.monotonic() - started)
        beating.stop()
        if not records:
            self._tell(client, "release", {"lease": lease, "reason": "already recorded by this agent"})
            return False
        _say(f"cell {spec.cell_id}: {records[0].status}" + (f" ({records[0].error})" if records[0].error else ""))
        if beating.lost:
            _say(f"cell {spec.cell_id}: the lease lapsed meanwhile; the coordinator gave the cell to another agent")
            return True
        try:
            client.call("complete", {"lease": lease})
        except ApiError as exc:
            _say(f"cell {spec.cell_id}: not accepted: {exc}")
            if exc.status not in (410, 422):    # the coordinator took the cell back itself
                self._tell(client, "release", {"lease": lease, "reason": f"not delivered: {exc}"})
        return True

    @staticmethod
    def _tell(client: WorkClient, call: str, body: dict) -> None:
        if "reason" in body:
            body = {**body, "reason": one_line(body["reason"])}
        try:
            client.call(call, body)
        except ApiError as exc:
            _say(f"{call}: {exc}")


def _progress(cell_id: str, phase: str, detail: str) -> None:
    _say(f"  {phase}: {detail}")


def _granter(client: WorkClient, lease: str):
    """Upload grants for this lease's keys; a refusal surfaces as a store error (the record
    stays spooled)."""
    def grant(items: list[dict]) -> list[dict]:
        try:
            return client.call("grant", {"lease": lease, "items": items})["answers"]
        except ApiError as exc:
            raise StoreError(f"upload grant refused: {exc}") from None
    return grant


class _Heartbeat(threading.Thread):
    """Keeps the lease alive while the cell builds and runs; notes when it was lost."""

    def __init__(self, client: WorkClient, lease: str, every_s: float):
        super().__init__(daemon=True)
        self.client, self.lease, self.every_s = client, lease, every_s
        self.lost = False
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.every_s):
            try:
                self.client.call("heartbeat", {"lease": self.lease})
            except ApiError as exc:
                if exc.status == 410:
                    self.lost = True
                    return

    def stop(self) -> None:
        self._halt.set()


def main(coordinator: str, code: str | None, policy: str, state_dir: str, ca_cert: str | None,
         name: str | None, max_cells: int | None, exit_when_idle: bool, poll_s: float,
         code_file: str | None = None) -> int:
    def terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    try:
        agent = Volunteer(coordinator, policy, Path(state_dir), ca_cert, name, poll_s)
        return agent.run(code, max_cells, exit_when_idle, code_file)
    except (VolunteerError, ApiError) as exc:
        print(f"hwmatrix: {exc}", file=sys.stderr)
        return 2
