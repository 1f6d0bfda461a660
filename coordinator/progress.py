"""Live progress of a run: agents report phases to a small Ray actor; the driver draws it."""
from __future__ import annotations

import time

import ray
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@ray.remote(num_cpus=0)
class ProgressBoard:
    """Latest phase of each cell, as reported by the agents running them."""

    def __init__(self) -> None:
        self.phases: dict[str, tuple[str, str, float]] = {}

    def update(self, cell_id: str, phase: str, detail: str) -> None:
        self.phases[cell_id] = (phase, detail, time.time())

    def snapshot(self) -> dict:
        return dict(self.phases)


class RunProgress:
    """cells done/total, the current cell and its phase, elapsed time and ETA (rich, on stderr)."""

    def __init__(self, total: int, already_done: int = 0, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[phase]}"),
            console=self.console, transient=False,
        )
        self.task = self.progress.add_task("cells", total=total, completed=already_done, phase="")

    def __enter__(self) -> "RunProgress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def show_phase(self, label: str, phase: str, detail: str) -> None:
        self.progress.update(self.task, phase=f"{label}: {phase} {detail}")

    def cell_done(self, label: str, status: str) -> None:
        self.progress.advance(self.task)
        if status != "ok":
            self.progress.console.print(f"[red]{label}: {status}")
