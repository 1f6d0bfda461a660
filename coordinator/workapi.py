"""The volunteers' work API: HTTPS + JSON beside the Ray coordinator.

Volunteer agents enroll with a one-time code, then pull leases for cells that fit their
hardware and their owner's terms, heartbeat them, and upload through presigned PUTs signed
here (they hold no store credentials). Every call but enrollment carries the agent's key
(``Authorization: Bearer``); the ledger (``coordinator/volunteers.py``) checks it.

One small stdlib server (a thread per connection, bounded bodies and socket timeouts): the
API is a handful of calls from a few hundred agents, and fewer moving parts are fewer
things to secure.
"""
from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl
import sys
import threading
import time
from collections import deque
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from agent.policy import terms_allow
from agent.store import StoreError, open_store, result_key
from coordinator.crosscheck import cross_check
from coordinator.hardware_match import matches
from coordinator.uploads import Granter
from coordinator.volunteers import DEFAULT_LEASE_S, Caller, Ledger, Refused, fingerprint

MAX_BODY = 1 << 20
ENROLL_FAILURES_PER_10_MIN = 10       # per client address: codes are 80 bits, this stops noise


def fits(cell: dict, profile: dict, terms: dict) -> bool:
    """Hardware the cell asks for, and the owner's terms (repos, fork PRs, GPUs)."""
    spec, need = json.loads(cell["spec"]), json.loads(cell["requirement"])
    if terms_allow(terms, spec) is not None:
        return False
    ok, _ = matches(need.get("hardware"), profile)
    gpus = need.get("gpus") or 0
    return ok and ((profile.get("gpus") or {}).get("count") or 0) >= gpus


@lru_cache(maxsize=16)
def _store(url: str):
    return open_store(url)


class WorkApi:
    """What each call does, apart from HTTP."""

    def __init__(self, ledger: Ledger, lease_s: float = DEFAULT_LEASE_S, replicate: float = 0.1):
        self.ledger, self.lease_s, self.replicate = ledger, lease_s, replicate
        self.failures: dict[str, deque] = {}

    def enroll(self, body: dict, client: str) -> dict:
        recent = self.failures.setdefault(client, deque(maxlen=ENROLL_FAILURES_PER_10_MIN))
        if len(recent) == recent.maxlen and time.time() - recent[0] < 600:
            raise Refused(429, "too many failed enrollments from this address; wait 10 minutes")
        profile = body.get("profile") if isinstance(body.get("profile"), dict) else {}
        try:
            agent_id, key, state = self.ledger.enroll(str(body.get("code", "")), str(body.get("name") or "agent"),
                                                      profile)
        except Refused:
            recent.append(time.time())
            raise
        log(f"enrolled {agent_id} ({state}) class {profile.get('hardware_class')}")
        return {"agent_id": agent_id, "key": key, "fingerprint": fingerprint(key), "state": state}

    def lease(self, caller: Caller, body: dict) -> dict:
        profile = body.get("profile") if isinstance(body.get("profile"), dict) else {}
        terms = body.get("terms") if isinstance(body.get("terms"), dict) else {}
        hw_class = str(profile.get("hardware_class") or "unknown")
        got = self.ledger.lease(caller, hw_class, lambda cell: fits(cell, profile, terms), self.lease_s)
        if got is None:
            return {"lease": None, "retry_s": 30}
        spec = got["spec"]
        if got["role"] == "replica":
            spec["one_per_class"] = False      # the point is a second record of the class
        log(f"leased {got['cell_id']} ({got['role']}) to {caller.agent_id}")
        return {"lease": got["lease_id"], "role": got["role"], "spec": spec, "lease_s": self.lease_s,
                "heartbeat_s": max(1.0, self.lease_s / 4)}

    def heartbeat(self, caller: Caller, body: dict) -> dict:
        self.ledger.heartbeat(caller, str(body.get("lease", "")), self.lease_s)
        return {"ok": True}

    def release(self, caller: Caller, body: dict) -> dict:
        self.ledger.release(caller, str(body.get("lease", "")), str(body.get("reason") or "released"))
        log(f"{caller.agent_id} gave back a cell: {str(body.get('reason'))[:200]}")
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
        """Closed only once the record is in the store, attributed to this agent and key."""
        claim = self.ledger.held(caller, str(body.get("lease", "")))
        store = _store(claim["store_url"])
        try:
            record = json.loads(store.get(result_key(claim["run_id"], claim["cell_id"], caller.agent_id)))
        except KeyError:
            raise Refused(409, "no record of this cell from this agent in the store yet") from None
        except (StoreError, ValueError) as exc:
            raise Refused(503, f"cannot read the record back: {exc}") from None
        if record.get("agent_id") != caller.agent_id or record.get("agent_key_fingerprint") not in \
                self.ledger.fingerprints(caller.agent_id):
            self.ledger.release(caller, claim["lease_id"], "record failed the attribution check")
            self.ledger.note_check(claim["run_id"], claim["cell_id"], claim["hardware_class"], [caller.agent_id],
                                   "disagree", "record not attributed to the agent's own key")
            raise Refused(422, "the record does not carry this agent's id and key fingerprint")
        done = self.ledger.finish(caller, claim["lease_id"], str(record.get("status")), self.replicate)
        log(f"{caller.agent_id} recorded {claim['cell_id']} ({claim['role']}, {record.get('status')})")
        if claim["role"] == "replica":
            self._cross_check(claim, record, store)
        return {"ok": True, "state": done["state"]}

    def _cross_check(self, claim: dict, record: dict, store) -> None:
        first = self.ledger.primary_agent(claim["run_id"], claim["cell_id"], claim["hardware_class"])
        if first is None:
            return
        try:
            other = json.loads(store.get(result_key(claim["run_id"], claim["cell_id"], first)))
        except (KeyError, StoreError, ValueError):
            return
        verdict = cross_check(other, record)
        self.ledger.note_check(claim["run_id"], claim["cell_id"], claim["hardware_class"],
                               [first, record["agent_id"]], verdict.verdict, verdict.detail)
        log(f"cross-check {claim['cell_id']}: {first} vs {record['agent_id']}: {verdict.verdict} {verdict.detail}")

    def rotate(self, caller: Caller, key: str) -> dict:
        new = self.ledger.rotate(caller, key)
        log(f"{caller.agent_id} rotated its key")
        return {"key": new, "fingerprint": fingerprint(new)}


def log(message: str) -> None:
    print(f"{datetime.datetime.now().strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


AUTHED = ("lease", "heartbeat", "release", "grant", "complete", "rotate")


def make_handler(api: WorkApi):
    class Handler(BaseHTTPRequestHandler):
        server_version = "hwmatrix-workapi"
        sys_version = ""
        timeout = 30                         # a stalled client frees its thread
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args) -> None:   # noqa: A002 - requests are logged by the API itself
            pass

        def _answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:     # noqa: N802
            if self.path == "/v1/health":
                self._answer(200, {"ok": True})
            else:
                self._answer(404, {"error": "not found"})

        def do_POST(self) -> None:    # noqa: N802
            try:
                self._answer(200, self._route())
            except Refused as exc:
                self._answer(exc.status, {"error": str(exc)})
            except Exception as exc:  # noqa: BLE001 - one bad request must not take the server down
                log(f"internal error on {self.path}: {type(exc).__name__}: {exc}")
                self._answer(500, {"error": "internal error"})

        def _route(self) -> dict:
            call = self.path.removeprefix("/v1/")
            if call != "enroll" and call not in AUTHED:
                raise Refused(404, "no such call")
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                raise Refused(400, "bad Content-Length") from None
            if length > MAX_BODY or length < 0:
                raise Refused(413, "request too large")
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                raise Refused(400, "the body is not JSON") from None
            if not isinstance(body, dict):
                raise Refused(400, "the body must be a JSON object")
            if call == "enroll":
                return api.enroll(body, self.client_address[0])
            auth = self.headers.get("Authorization") or ""
            if not auth.startswith("Bearer ") or len(auth) > 200:
                raise Refused(401, "no key (Authorization: Bearer KEY)")
            key = auth.removeprefix("Bearer ").strip()
            caller = api.ledger.authenticate(key)
            answer = api.rotate(caller, key) if call == "rotate" else getattr(api, call)(caller, body)
            return {**answer, "rotate": caller.rotate}
    return Handler


def self_signed(tls_dir: Path, hosts: list[str]) -> tuple[Path, Path]:
    """A certificate for tests and first steps; agents pin it with --ca-cert."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert_path, key_path = tls_dir / "cert.pem", tls_dir / "key.pem"
    if cert_path.is_file() and key_path.is_file():
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    names = []
    for host in dict.fromkeys(hosts + ["localhost", "127.0.0.1", socket.gethostname()]):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hwmatrix work API")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    key_path.touch(mode=0o600)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def serve(ledger: Ledger, host: str, port: int, cert: Path, key: Path, lease_s: float, replicate: float,
          ready=None) -> ThreadingHTTPServer:
    """Start serving (in a thread); returns the server (``server_address`` has the real port)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    server = ThreadingHTTPServer((host, port), make_handler(WorkApi(ledger, lease_s, replicate)))
    server.daemon_threads = True
    # the handshake happens in the connection's thread (with its timeout), not in accept()
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
