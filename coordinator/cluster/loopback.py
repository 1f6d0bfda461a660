"""Ray on one machine stays on loopback.

On Linux Ray rewrites 127.0.0.1, given as a node IP or as the address a driver joins, to the
machine's interface address, so the embedded Ray of a local run, and a driver of a cluster
on this machine, would listen on and address the network. Ray keeps to loopback in its
no-cluster mode (its default on macOS and Windows): RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0,
read once, when ray is imported. In that mode `ray start` refuses to add a worker node, so
it is for drivers and the embedded Ray, never for `hwmatrix agent join`.
"""
from __future__ import annotations

import os

LOOPBACK = "127.0.0.1"
NO_CLUSTER_MODE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
LOOPBACK_HOSTS = {LOOPBACK, "localhost", "::1", "[::1]"}


def is_loopback(address: str) -> bool:
    """HOST:PORT names this machine's loopback."""
    return address.rsplit(":", 1)[0] in LOOPBACK_HOSTS


def keep_ray_on_loopback(address: str | None = None) -> None:
    """Before ray is imported: the embedded Ray (no address) or a driver of a cluster on
    this machine (a loopback address) uses 127.0.0.1 and nothing else."""
    if address is None or is_loopback(address):
        os.environ[NO_CLUSTER_MODE] = "0"
