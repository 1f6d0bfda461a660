"""Ray heads that hwmatrix starts run without Ray's dashboard process.

With the dashboard off (`include_dashboard=False`, `--include-dashboard false`) Ray 2.60
still starts that process, for one module only: UsageStatsHead. On start-up it asks the
cloud metadata endpoints which cloud it runs on (http://169.254.169.254 twice, and
metadata.google.internal through DNS), before it looks whether usage stats are off; a
`ray start` head then reports "usage stats disabled" to usage-stats.ray.io. So a local run
talked to the network, and a head told a third party it exists. hwmatrix reads nothing from
that process (agents and nodes come from the GCS), so it is not started at all.

`python -m coordinator.cluster.no_dashboard start --head ...` is `ray start` with the same
change, for `hwmatrix cluster up`.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def without_dashboard() -> Iterator[None]:
    """Inside: a Ray head started with the dashboard off gets no dashboard process. One that
    asks for the dashboard gets it, as Ray starts it."""
    from ray._private import services

    start_api_server = services.start_api_server

    def start_unless_off(include_dashboard, *args, **kwargs):
        if include_dashboard is False:
            return None, None               # no URL, no process: what Ray does when it fails to start
        return start_api_server(include_dashboard, *args, **kwargs)

    services.start_api_server = start_unless_off
    try:
        yield
    finally:
        services.start_api_server = start_api_server


def main() -> None:
    from ray.scripts.scripts import main as ray_main

    sys.argv[0] = "ray"
    with without_dashboard():
        ray_main()


if __name__ == "__main__":
    main()
