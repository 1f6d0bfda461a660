"""The work API's HTTP front against hostile clients: `hwmatrix volunteers serve` on
127.0.0.1 with its self-signed certificate, spoken to over raw TLS sockets (desync,
slowloris, oversized and malformed requests, aborted connections), its log read back.
No store is needed: nothing here uploads."""
from __future__ import annotations

import http.client
import json
import os
import re
import select
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from coordinator.volunteers.ledger import Ledger
from tests.conftest import REPO, two_ref_matrix
from tests.workapi_helper import PROFILE, TERMS, ServedWorkApi

DEADLINE_S = 10            # README "Volunteers": a whole request within 10 s of the connection
MAX_CONNECTIONS = 256      # README "Volunteers": more connections at once get 503
SMUGGLED = b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


class Server(ServedWorkApi):
    """`hwmatrix volunteers serve --port 0` in its own process, spoken to over raw TLS too."""

    def __init__(self, tmp_path: Path):
        super().__init__(tmp_path, "--lease-s", "60")
        self.context = ssl.create_default_context(cafile=self.ca)

    def tls(self, timeout: float = 5) -> ssl.SSLSocket:
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return self.context.wrap_socket(raw, server_hostname="127.0.0.1")

    def call(self, name: str, body: object = None, key: str | None = None, raw: bytes | None = None):
        """(status, headers, JSON answer) of one call on its own connection."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30, context=self.context)
        try:
            headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
            conn.request("POST", f"/v1/{name}", body=raw if raw is not None else json.dumps(body or {}),
                         headers=headers)
            answer = conn.getresponse()
            return answer.status, dict(answer.getheaders()), json.loads(answer.read() or b"{}")
        finally:
            conn.close()

    def enroll(self, name: str = "donor") -> str:
        status, _, answer = self.call("enroll", {"code": Ledger(self.state).invite(approved=True), "name": name,
                                                 "profile": PROFILE})
        assert status == 200, answer
        return answer["key"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server for the tests that leave no state behind."""
    started = Server(tmp_path_factory.mktemp("workapi"))
    yield started
    started.close()


@pytest.fixture
def fresh_server(tmp_path):
    """A server of its own: fresh rate-limit buckets and a log of this test alone."""
    started = Server(tmp_path)
    yield started
    started.close()


def read_until_closed(sock: ssl.SSLSocket, seconds: float) -> tuple[bytes, bool]:
    """Whatever the server sends within ``seconds``, and whether it then closed the connection."""
    data, end = b"", time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return data, False
        except OSError:                # reset, or TLS ended without close_notify
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def statuses(data: bytes) -> list[int]:
    return [int(s) for s in re.findall(rb"(?m)^HTTP/1\.[01] (\d{3}) ", data)]


def log_lines(text: str) -> list[dict]:
    """Every line of the server's log as the JSON object it must be."""
    return [json.loads(line) for line in text.splitlines()]


# ------------------------------------------------------------------ desync and malformed requests

@pytest.mark.timeout(60)
@pytest.mark.parametrize("head, body", [
    (b"POST /v1/nosuch HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", SMUGGLED),
    (b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nContent-Length: 7\r\n\r\n", SMUGGLED),
    (b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Length: abc%d\r\n\r\n", SMUGGLED),
    (b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Length: 2%d000000\r\n\r\n", SMUGGLED),
    (b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n",
     b"0\r\n\r\n" + SMUGGLED),
], ids=["unknown call", "two lengths", "bad length", "over 1 MiB", "length and chunked"])
def test_a_refused_request_never_leaves_its_body_to_be_answered_as_a_second_request(server, head, body):
    sock = server.tls()
    try:
        sock.sendall(head % len(body) + body)
        data, closed = read_until_closed(sock, 5)
    finally:
        sock.close()
    assert len(statuses(data)) == 1 and statuses(data)[0] in (400, 404, 413), data[:600]
    assert closed, "the connection stayed open after a refusal"


@pytest.mark.timeout(60)
def test_a_body_over_1_mib_is_refused_413_without_waiting_for_the_rest_of_it(server):
    chunk = b"%x\r\n%s\r\n" % (64 << 10, b" " * (64 << 10))
    for head, body in ((b"Transfer-Encoding: chunked", chunk * 20),             # 1.25 MiB of an endless body
                       (b"Content-Length: 4000000", b" " * (100 << 10))):       # 100 KiB of 4 MB
        sock = server.tls()
        try:
            try:
                sock.sendall(b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n\r\n" + body)
            except OSError:     # the server refused and closed while this was still sending: its answer
                pass            # is already here to read (as in CI once: SSLEOFError mid-sendall)
            started = time.monotonic()
            data, closed = read_until_closed(sock, 5)
        finally:
            sock.close()
        assert statuses(data) == [413], (head, data[:600])
        assert closed and time.monotonic() - started < 3, head


@pytest.mark.timeout(60)
def test_headers_over_16_kib_are_refused_and_the_connection_closed(server):
    sock = server.tls()
    pads = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 400) for i in range(50))      # 20 KiB in 50 headers
    try:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n" + pads + b"\r\n")
        data, closed = read_until_closed(sock, 5)
    finally:
        sock.close()
    assert statuses(data) and statuses(data)[0] in (400, 431), data[:600]
    assert closed


@pytest.mark.timeout(60)
def test_json_nested_500k_deep_is_refused_400_not_an_internal_error(server):
    status, _, answer = server.call("enroll", raw=b"[" * 500_000)
    assert status == 400, answer
    assert server.call("enroll", raw=b'{"a":' * 200_000)[0] == 400
    assert server.proc.poll() is None


@pytest.mark.timeout(60)
def test_the_work_api_listens_with_a_backlog_of_at_least_128(server):
    if shutil.which("ss") is None:
        pytest.skip("ss (iproute2) is not installed here")
    listing = subprocess.run(["ss", "-Hltn", f"sport = :{server.port}"], capture_output=True, text=True,
                             timeout=30).stdout.split()
    assert int(listing[2]) >= 128, listing         # Send-Q of a listening socket: its backlog


# ------------------------------------------------------------------ slowloris and the connection cap

def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed ``sock``; reading only what is already there (a TLS session
    ticket is no answer, and must not pass for one)."""
    if not select.select([sock], [], [], 0)[0]:
        return False
    sock.settimeout(0)
    try:
        return not sock.recv(4096)
    except (ssl.SSLWantReadError, BlockingIOError):
        return False
    except OSError:
        return True
    finally:
        sock.settimeout(5)


def _trickle(clients: dict, seconds: float) -> dict:
    """Send one byte every 0.5 s on each trickling socket and watch all of them: how long each
    lived from its connect until the server closed it (None: still open after ``seconds``)."""
    lived: dict = {name: None for name in clients}
    end = time.monotonic() + seconds
    while time.monotonic() < end and any(v is None for v in lived.values()):
        for name, (sock, trickles, born) in clients.items():
            if lived[name] is not None:
                continue
            try:
                if trickles:
                    sock.send(b"a")
                closed = _closed_by_server(sock)
            except OSError:
                closed = True
            if closed:
                lived[name] = time.monotonic() - born
        time.sleep(0.5)
    return lived


def _slow_clients(server: Server, headers: int, bodies: int, silent: int) -> dict:
    """TLS clients stuck in their headers or in their body, and TCP clients that never say hello."""
    clients = {}
    for i in range(headers):
        born, sock = time.monotonic(), server.tls()
        sock.sendall(b"POST /v1/enroll HTTP/1.1\r\nX-Slow: ")
        clients[f"headers-{i}"] = (sock, True, born)
    for i in range(bodies):
        born, sock = time.monotonic(), server.tls()
        sock.sendall(b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")
        clients[f"body-{i}"] = (sock, True, born)
    for i in range(silent):
        clients[f"silent-{i}"] = (socket.create_connection(("127.0.0.1", server.port)), False, time.monotonic())
    return clients


def _cut_at_deadline(lived: dict) -> list[str]:
    """The clients not closed by the deadline (give or take the 0.5 s polls and a busy machine)."""
    return sorted(name for name, t in lived.items() if t is None or not DEADLINE_S - 1 <= t <= DEADLINE_S + 3)


@pytest.mark.timeout(60)
def test_a_client_trickling_its_headers_or_its_body_is_cut_off_at_the_deadline(server):
    clients = _slow_clients(server, headers=1, bodies=1, silent=0)
    try:
        lived = _trickle(clients, DEADLINE_S + 4)
    finally:
        for sock, _, _ in clients.values():
            sock.close()
    assert not _cut_at_deadline(lived), lived


@pytest.mark.timeout(90)
def test_fifty_slowloris_clients_hold_no_connection_after_the_deadline_and_block_nobody(server):
    clients = _slow_clients(server, headers=20, bodies=20, silent=10)
    try:
        assert server.call("enroll", {"code": "nope"})[0] == 403        # served meanwhile
        lived = _trickle(clients, DEADLINE_S + 4)
    finally:
        for sock, _, _ in clients.values():
            sock.close()
    held = _cut_at_deadline(lived)
    assert not held, f"{len(held)} of 50 not cut off at the {DEADLINE_S} s deadline: " \
                     f"{ {name: lived[name] for name in held[:10]} }"


@pytest.mark.timeout(90)
def test_connections_beyond_the_cap_get_503_and_the_api_serves_again_once_they_close(server):
    held = []
    try:
        for _ in range(MAX_CONNECTIONS):
            sock = server.tls()
            sock.sendall(b"GET /v1/health HTTP/1.1\r\n")        # never finishes its headers
            held.append(sock)
        sock = server.tls()
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        data, _ = read_until_closed(sock, 5)
        sock.close()
    finally:
        for sock in held:
            sock.close()
    assert statuses(data) == [503], data[:300]
    time.sleep(0.5)
    assert server.call("enroll", {"code": "nope"})[0] == 403


# ------------------------------------------------------------------ the log

@pytest.mark.timeout(60)
def test_aborted_and_garbled_connections_write_one_json_line_at_most_and_no_traceback(fresh_server):
    def reset(sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    plain = socket.create_connection(("127.0.0.1", fresh_server.port), timeout=5)
    plain.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")         # plain HTTP on the TLS port
    read_until_closed(plain, 3)
    plain.close()
    hello = socket.create_connection(("127.0.0.1", fresh_server.port), timeout=5)
    hello.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(40))   # half a ClientHello
    time.sleep(0.2)
    reset(hello)
    for request in (b"POST /v1/enroll HTTP/1.1\r\nContent-Le",
                    b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"code\":",
                    b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"):
        sock = fresh_server.tls()
        sock.sendall(request)
        time.sleep(0.2)
        reset(sock)
    assert fresh_server.call("enroll", {"code": "nope"})[0] == 403
    time.sleep(1)
    text = fresh_server.log()
    assert "Traceback" not in text and len(text) < 4000, text[-3000:]
    log_lines(text)


@pytest.mark.timeout(60)
def test_the_log_writes_each_message_as_one_json_line_whatever_the_text_holds(capsys):
    from coordinator.volunteers.workapi import log

    forged = "x\n12:00:00 enrolled v-fake (approved)\r\x1b]0;owned\x07\x1b[2J\u202eevil\u2066"
    log(f"gave back a cell: {forged}")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and forged in json.loads(lines[0]).get("msg", ""), lines
    assert not re.search(r"[\x00-\x1f\x7f\u202a-\u202e\u2066-\u2069]", lines[0])


@pytest.mark.timeout(120)
def test_a_release_reason_or_hardware_class_from_an_agent_cannot_forge_or_color_a_log_line(fresh_server,
                                                                                            tmp_path):
    forged = "bye\n12:00:00 enrolled v-fake (approved)\x1b]0;owned\x07\x1b[2J\u202e"
    code = Ledger(fresh_server.state).invite(approved=True)
    fresh_server.call("enroll", {"code": code, "name": "mallory", "profile": {**PROFILE, "hardware_class": forged}})
    key = fresh_server.enroll("donor")
    queued = subprocess.run([sys.executable, "-m", "coordinator.cli", "volunteers", "queue",
                             two_ref_matrix(tmp_path, "inj", refs=("B",)), "--store", "s3://nowhere/x",
                             "--state", str(fresh_server.state), "--run-id", "run-inj"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert queued.returncode == 0, queued.stderr
    status, _, leased = fresh_server.call("lease", {"profile": PROFILE, "terms": TERMS}, key=key)
    assert status == 200 and leased["lease"], leased
    status, _, answer = fresh_server.call("release", {"lease": leased["lease"], "reason": forged}, key=key)
    assert status in (200, 400), answer                   # refused at input, or logged escaped
    time.sleep(0.5)
    text = fresh_server.log()
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f\u202a-\u202e\u2066-\u2069]", text), text[-2000:]
    assert not any(line.startswith("12:00:00") for line in text.splitlines()), text[-2000:]
    lines = log_lines(text)
    if status == 200:
        assert any(line.get("reason") == forged for line in lines), lines


# ------------------------------------------------------------------ rate limits

@pytest.mark.timeout(60)
def test_failed_enrollments_from_one_address_do_not_lock_out_the_next_valid_code(fresh_server):
    answers = [fresh_server.call("enroll", {"code": f"WRONG-{i}"}) for i in range(14)]
    valid = fresh_server.call("enroll", {"code": Ledger(fresh_server.state).invite(), "name": "behind-the-nat",
                                         "profile": PROFILE})
    assert valid[0] == 200, valid
    assert [s for s, _, _ in answers[:10]] == [403] * 10
    throttled = [(s, h) for s, h, _ in answers[10:]]
    assert all(s == 429 and int(h.get("retry-after", 0)) >= 1 for s, h in throttled), throttled


@pytest.mark.timeout(60)
def test_refused_keys_from_one_address_are_throttled_while_a_valid_key_still_works(fresh_server):
    key = fresh_server.enroll()
    answers = [fresh_server.call("heartbeat", {"lease": "x"}, key=f"hwmk_wrong{i}") for i in range(14)]
    assert [s for s, _, _ in answers[:10]] == [401] * 10
    assert all(s == 429 and int(h.get("retry-after", 0)) >= 1 for s, h, _ in answers[10:]), answers[10:]
    assert fresh_server.call("lease", {}, key=key)[0] == 200


@pytest.mark.timeout(90)
def test_an_agent_over_its_call_budget_gets_429_while_another_agent_is_not_slowed(fresh_server):
    busy, other = fresh_server.enroll("busy"), fresh_server.enroll("other")
    answers: list = []

    def hammer() -> None:
        for _ in range(12):
            answers.append(fresh_server.call("heartbeat", {"lease": "nope"}, key=busy))

    threads = [threading.Thread(target=hammer) for _ in range(8)]       # 96 calls
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    throttled = [h for s, h, _ in answers if s == 429]
    assert throttled and all(int(h["retry-after"]) >= 1 for h in throttled), [s for s, _, _ in answers]
    assert len(answers) - len(throttled) >= 60                     # the burst was served
    assert fresh_server.call("lease", {}, key=other)[0] == 200
