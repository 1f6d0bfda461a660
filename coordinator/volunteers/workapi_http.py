"""The work API over HTTPS: Starlette on uvicorn, with deadlines and limits.

The calls themselves are ``coordinator.volunteers.workapi.WorkApi``; this module is only the HTTP
front: TLS (1.2 at least), routing, Bearer keys, bodies, limits and the server's thread.

- One request per connection (every answer says ``Connection: close``): agents open one
  per call anyway, and a refusal sent before its body was read can then never leave that
  body behind to be parsed as a second request.
- A connection must deliver its whole request (TLS handshake, headers and body) within
  ``REQUEST_S`` of being accepted, however slowly it trickles: uvicorn's own timeouts only
  cover idle keep-alive connections, so the deadline is enforced here, in the protocol.
- Headers are capped by h11 (``MAX_HEADERS``), bodies are read as a stream up to
  ``MAX_BODY``, connections are capped (``MAX_CONNECTIONS``; more get 503) and the listen
  backlog is ``BACKLOG``.
- The ledger (SQLite) and the store (S3) block: each call runs in a bounded thread pool
  (``WORKERS``), never on the event loop.
- Failed enrollments and unknown keys are throttled per address, calls per agent
  (``coordinator.volunteers.ratelimit``); a valid code or key is never refused for others' failures.
- Everything is logged through ``workapi.log`` (one JSON object a line), uvicorn's and
  asyncio's messages too, without tracebacks; there is no access log.
"""
from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import logging
import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from coordinator.volunteers.ratelimit import Buckets, Throttled
from coordinator.volunteers.ledger import Ledger, Refused
from coordinator.volunteers.workapi import WorkApi, log

AUTHED = ("lease", "heartbeat", "release", "grant", "complete", "rotate")
MAX_BODY = 1 << 20                 # bytes of JSON a call may send
MAX_HEADERS = 16 << 10             # bytes of request line and headers (h11's incomplete-event cap)
REQUEST_S = 10.0                   # from accept to the last byte of the request
TLS_CLOSE_S = 5.0                  # a peer that never answers our TLS close_notify
MAX_CONNECTIONS = 256
BACKLOG = 1024
WORKERS = 8


@dataclass
class Limits:
    """Token buckets (burst, then per second), see README "Volunteers"."""
    failures: Buckets = field(default_factory=lambda: Buckets(10, 1 / 60))   # per address: bad codes and keys
    calls: Buckets = field(default_factory=lambda: Buckets(60, 2.0))         # per agent: every authenticated call


def _answer(status: int, body: dict, headers: dict | None = None) -> Response:
    return Response(json.dumps(body), status, media_type="application/json",
                    headers={"Cache-Control": "no-store", "Connection": "close", **(headers or {})})


async def _body(request: Request) -> bytes:
    """The body, read as a stream and refused (413) past MAX_BODY without reading the rest."""
    declared = request.headers.get("content-length")        # h11 has checked it is a number
    if declared is not None and "transfer-encoding" in request.headers:
        raise Refused(400, "both Content-Length and Transfer-Encoding")     # the classic smuggling pair
    if declared is not None and int(declared) > MAX_BODY:
        raise Refused(413, "request too large")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            raise Refused(413, "request too large")
    return bytes(data)


def _json_object(data: bytes) -> dict:
    try:
        body = json.loads(data or b"{}")
    except (ValueError, RecursionError):
        raise Refused(400, "the body is not JSON (or is nested too deep)") from None
    if not isinstance(body, dict):
        raise Refused(400, "the body must be a JSON object")
    return body


class Calls:
    """One call, from its raw body to its answer: runs in a worker thread (it blocks)."""

    def __init__(self, api: WorkApi, limits: Limits):
        self.api, self.limits = api, limits

    def __call__(self, call: str, data: bytes, auth: str, client: str) -> dict:
        body = _json_object(data)
        if call == "enroll":
            return self._failing(client, "failed enrollments", (400, 403), lambda: self.api.enroll(body, client))
        key = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") and len(auth) <= 200 else None
        caller = self._failing(client, "refused keys", (401,), lambda: self._authenticate(key))
        wait = self.limits.calls.take(caller.agent_id)
        if wait:
            raise Throttled(wait, f"too many calls from agent {caller.agent_id}")
        answer = self.api.rotate(caller, key) if call == "rotate" else getattr(self.api, call)(caller, body)
        return {**answer, "rotate": caller.rotate}

    def _authenticate(self, key: str | None):
        if key is None:
            raise Refused(401, "no key (Authorization: Bearer KEY)")
        return self.api.ledger.authenticate(key)

    def _failing(self, client: str, what: str, counted: tuple[int, ...], attempt):
        """``attempt()``; only its refusals with a ``counted`` status spend the address's
        bucket, and only they are throttled once it is empty."""
        try:
            return attempt()
        except Refused as exc:
            if exc.status in counted:
                wait = self.limits.failures.take(client)
                if wait:
                    raise Throttled(wait, f"too many {what} from this address") from None
            raise


def make_app(api: WorkApi, limits: Limits | None = None) -> Starlette:
    calls = Calls(api, limits or Limits())
    workers: list[anyio.CapacityLimiter] = []       # made on the event loop, at the first call

    async def endpoint(request: Request) -> Response:
        call = request.path_params["call"]
        if sum(len(name) + len(value) + 4 for name, value in request.scope["headers"]) > MAX_HEADERS:
            return _answer(431, {"error": f"headers over {MAX_HEADERS >> 10} KiB"})   # h11 caps only a split read
        if request.method == "GET":
            return _answer(200, {"ok": True}) if call == "health" else _answer(404, {"error": "not found"})
        if call != "enroll" and call not in AUTHED:
            return _answer(404, {"error": "no such call"})
        try:
            data = await _body(request)
            if not workers:
                workers.append(anyio.CapacityLimiter(WORKERS))
            client = request.client.host if request.client else "unknown"
            answer = await anyio.to_thread.run_sync(calls, call, data, request.headers.get("authorization") or "",
                                                    client, limiter=workers[0])
            return _answer(200, answer)
        except Throttled as exc:
            return _answer(429, {"error": str(exc)}, {"Retry-After": str(exc.retry_after)})
        except Refused as exc:
            return _answer(exc.status, {"error": str(exc)})
        except Exception as exc:  # noqa: BLE001 - one bad request must not take the server down
            log("internal error", call=call, error=f"{type(exc).__name__}: {exc}")
            return _answer(500, {"error": "internal error"})

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        return _answer(status, {"error": "not found" if status == 404 else "method not allowed"})

    return Starlette(routes=[Route("/v1/{call}", endpoint, methods=["GET", "POST"])],
                     exception_handlers={HTTPException: http_error})


class _DeadlineProtocol(H11Protocol):
    """uvicorn's h11 protocol with one deadline per connection, set when the connection is
    accepted (before the TLS handshake): headers and body must all be in by then."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._deadline = self.loop.call_later(REQUEST_S, self._too_slow)

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None and not self.cycle.more_body:
            self._deadline.cancel()              # the request is in; what is left is the call's work

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline.cancel()
        super().connection_lost(exc)

    def _too_slow(self) -> None:
        if self.transport is not None:           # None: the TLS handshake never finished (asyncio ends it)
            self.transport.abort()


class _Loop(asyncio.SelectorEventLoop):
    """uvicorn has no setting for the TLS handshake's or close's timeouts (asyncio: 60 s, 30 s)."""

    async def create_server(self, *args, **kwargs):
        if kwargs.get("ssl") is not None:
            kwargs.setdefault("ssl_handshake_timeout", REQUEST_S)
            kwargs.setdefault("ssl_shutdown_timeout", TLS_CLOSE_S)
        return await super().create_server(*args, **kwargs)


def _new_loop() -> asyncio.AbstractEventLoop:
    loop = _Loop()
    loop.set_exception_handler(lambda _loop, context: log(
        "event loop: " + str(context.get("message")), error=repr(context.get("exception"))[:300]))
    return loop


class _ToLog(logging.Handler):
    """uvicorn's and asyncio's records as our log lines: one line each, never a traceback."""

    def emit(self, record: logging.LogRecord) -> None:
        fields = {"source": record.name, "level": record.levelname.lower()}
        if record.exc_info and record.exc_info[1] is not None:
            fields["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"[:300]
        log(record.getMessage(), **fields)


def _route_logs() -> None:
    for name in ("uvicorn", "asyncio"):
        logger = logging.getLogger(name)
        logger.handlers = [_ToLog()]
        logger.setLevel(logging.WARNING)
        logger.propagate = False


def _tls12(config: uvicorn.Config, default) -> ssl.SSLContext:
    context = default()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class WorkServer:
    """The running work API: uvicorn on its own event loop, in a daemon thread."""

    def __init__(self, config: uvicorn.Config, sock: socket.socket):
        self.server_address = sock.getsockname()
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, args=(sock,), name="workapi", daemon=True)
        self._thread.start()

    def _run(self, sock: socket.socket) -> None:
        with asyncio.Runner(loop_factory=_new_loop) as runner:
            runner.run(self._server.serve(sockets=[sock]))

    def shutdown(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)


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
          limits: Limits | None = None) -> WorkServer:
    """Start serving (in a thread); ``server_address`` has the real port. A bad address or
    certificate raises here (OSError, ssl.SSLError), before anything runs."""
    _route_logs()
    sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                                backlog=BACKLOG)
    try:
        config = uvicorn.Config(
            make_app(WorkApi(ledger, lease_s, replicate), limits), interface="asgi3", http=_DeadlineProtocol,
            ws="none", lifespan="off", log_config=None, access_log=False, proxy_headers=False,
            server_header=False, headers=[("Server", "hwmatrix-workapi")], backlog=BACKLOG,
            limit_concurrency=MAX_CONNECTIONS, h11_max_incomplete_event_size=MAX_HEADERS,
            timeout_keep_alive=5, timeout_graceful_shutdown=5,
            ssl_certfile=str(cert), ssl_keyfile=str(key), ssl_context_factory=_tls12)
        config.load()
    except BaseException:
        sock.close()
        raise
    return WorkServer(config, sock)
