"""bench/workapi: a small, bounded load check of the volunteers' work API, loopback only.

Starts `hwmatrix volunteers serve --port 0` (self-signed, on 127.0.0.1) from this checkout,
or from another one with ``--repo`` (an old worktree, to compare on the same machine), then:

1. Load: N requests (default 2,000) from T threads (default 16), each on a NEW TLS
   connection (handshake included): half ``GET /v1/health``, half authenticated
   ``heartbeat`` calls (for a lease that does not exist: key check and ledger reads, answered
   410) spread over enough agents that none leaves its call budget. Prints requests/s and
   the p50/p99 latency of one request (connect to last byte).
2. Slowloris: 50 clients (20 trickle headers, 20 trickle a body, one byte every 0.5 s; 10
   never start TLS), and how many of them the server still holds 3 s after its 10 s deadline.

    python bench/workapi.py [--requests N] [--threads T] [--repo DIR]

The last line reads ``workapi: N req/s, p99 X s, slowloris held after deadline: K of 50``.
"""
from __future__ import annotations

import argparse
import http.client
import json
import math
import select
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEADLINE_S = 10                      # the server's whole-request deadline (README "Volunteers")
SLOWLORIS = {"headers": 20, "body": 20, "silent": 10}
CALLS_PER_AGENT = 25                 # inside an agent's burst of 60 calls
INVITES = ("import sys; from coordinator.volunteers.ledger import Ledger; ledger = Ledger(sys.argv[1]); "
           "print(' '.join(ledger.invite(approved=True) for _ in range(int(sys.argv[2]))))")


class Served:
    """The work API in its own process, from ``repo``."""

    def __init__(self, repo: Path, state: Path):
        self.repo, self.state = repo, state
        self.proc = subprocess.Popen([sys.executable, "-m", "coordinator.cli", "volunteers", "serve", "--state",
                                      str(state), "--port", "0"], cwd=repo, stdout=subprocess.PIPE,
                                     stderr=open(state.parent / "server.log", "w"), text=True)
        url = next((line.split()[1] for line in self.proc.stdout if line.startswith("serving ")), None)
        if not url:
            raise SystemExit(f"the server did not start: see {state.parent / 'server.log'}")
        self.port = int(url.rsplit(":", 1)[1])
        self.context = ssl.create_default_context(cafile=str(state / "tls" / "cert.pem"))

    def request(self, method: str, path: str, body: dict | None = None, key: str | None = None) -> tuple[int, float]:
        """(status, seconds) of one request on a new connection; status 0 if it failed."""
        started = time.perf_counter()
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30, context=self.context)
        try:
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
            answer = conn.getresponse()
            answer.read()
            status = answer.status
        except (OSError, http.client.HTTPException):
            status = 0
        finally:
            conn.close()
        return status, time.perf_counter() - started

    def agents(self, count: int) -> list[str]:
        codes = subprocess.run([sys.executable, "-c", INVITES, str(self.state), str(count)], cwd=self.repo,
                               capture_output=True, text=True, check=True, timeout=120).stdout.split()
        keys = []
        for i, code in enumerate(codes):
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30, context=self.context)
            conn.request("POST", "/v1/enroll", body=json.dumps({"code": code, "name": f"bench-{i}", "profile": {
                "hardware_class": "bench-class", "hostname": f"bench-{i}", "gpus": {"count": 0}}}))
            answer = json.loads(conn.getresponse().read())
            conn.close()
            keys.append(answer["key"])
        return keys

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def load(served: Served, requests: int, threads: int) -> tuple[float, float, float, dict]:
    keys = served.agents(math.ceil(requests / 2 / CALLS_PER_AGENT))
    jobs = [("GET", "/v1/health", None, None) if i % 2 == 0 else
            ("POST", "/v1/heartbeat", {"lease": "none"}, keys[(i // 2) // CALLS_PER_AGENT]) for i in range(requests)]
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(lambda job: served.request(*job), jobs))
    wall = time.perf_counter() - started
    latencies = sorted(seconds for _, seconds in results)
    counts: dict = {}
    for status, _ in results:
        counts[status] = counts.get(status, 0) + 1
    return requests / wall, latencies[len(latencies) // 2], latencies[min(len(latencies) - 1,
                                                                          math.ceil(0.99 * len(latencies)) - 1)], counts


def slowloris(served: Served) -> tuple[int, int]:
    """(held after the deadline, clients)."""
    clients = []
    for kind, count in SLOWLORIS.items():
        for _ in range(count):
            raw = socket.create_connection(("127.0.0.1", served.port), timeout=10)
            if kind == "silent":
                clients.append((raw, False))
                continue
            sock = served.context.wrap_socket(raw, server_hostname="127.0.0.1")
            sock.sendall(b"POST /v1/enroll HTTP/1.1\r\nX-Slow: " if kind == "headers" else
                         b"POST /v1/enroll HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")
            clients.append((sock, True))
    open_ = set(range(len(clients)))
    end = time.monotonic() + DEADLINE_S + 3
    while time.monotonic() < end and open_:
        for i in list(open_):
            sock, trickles = clients[i]
            try:
                if trickles:
                    sock.send(b"a")
                if select.select([sock], [], [], 0)[0]:
                    sock.settimeout(0)
                    try:
                        if not sock.recv(4096):
                            open_.discard(i)
                    except (ssl.SSLWantReadError, BlockingIOError):
                        pass
                    finally:
                        sock.settimeout(10)
            except OSError:
                open_.discard(i)
        time.sleep(0.5)
    for sock, _ in clients:
        sock.close()
    return len(open_), len(clients)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--repo", type=Path, default=REPO, help="serve from this checkout (default: this one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-workapi-") as tmp:
        served = Served(args.repo.resolve(), Path(tmp) / "ledger")
        try:
            rate, p50, p99, counts = load(served, args.requests, args.threads)
            print(f"load: {args.requests} requests, {args.threads} threads, a new TLS connection each: "
                  f"{rate:.0f} req/s, p50 {p50:.3f} s, p99 {p99:.3f} s; statuses {dict(sorted(counts.items()))}")
            held, total = slowloris(served)
        finally:
            served.close()
    print(f"workapi: {rate:.0f} req/s, p99 {p99:.2f} s, slowloris held after deadline: {held} of {total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
