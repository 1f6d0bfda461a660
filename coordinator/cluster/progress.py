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
        self.phases: dict[str, tuple[str, str, float, str | None]] = {}
        # (cell id, detail) of every "warning" phase: kept, since the next phase hides it at once
        self.warnings: list[tuple[str, str]] = []

    def update(self, cell_id: str, phase: str, detail: str, node_id: str | None = None) -> None:
        self.phases[cell_id] = (phase, detail, time.time(), node_id)
        if phase == "warning":
            self.warnings.append((cell_id, detail))

    def warnings_after(self, seen: int) -> list[tuple[str, str]]:
        return self.warnings[seen:]

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
        self.live = self.console.is_terminal          # a log file gets one line per event instead
        self.done, self.total, self.started = already_done, total, time.monotonic()
        self.last_phase = ""
        self.agent_rows: dict[str, int] = {}

    def __enter__(self) -> "RunProgress":
        if self.live:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live:
            self.progress.__exit__(*exc)

    def show_agent(self, agent: str, label: str, phase: str, detail: str) -> None:
        """One live line per agent: the cell it runs and its phase (a cluster run)."""
        text = f"{label}: {phase} {detail}"
        if not self.live:
            self.show_phase(f"{agent}: {label}", phase, detail)
            return
        if agent not in self.agent_rows:
            self.agent_rows[agent] = self.progress.add_task(f"  {agent}", total=None, phase="")
        self.progress.update(self.agent_rows[agent], phase=text)

    def show_phase(self, label: str, phase: str, detail: str) -> None:
        text = f"{label}: {phase} {detail}"
        if self.live:
            self.progress.update(self.task, phase=text)
        elif text != self.last_phase and phase in ("build", "quantize"):
            self.console.print(f"  {text}", highlight=False)
        self.last_phase = text

    def note(self, text: str) -> None:
        """An event worth a line of its own (a retry, a lost agent)."""
        self.console.print(text, highlight=False, markup=False)

    def cell_done(self, label: str, status: str) -> None:
        self.done += 1
        if self.live:
            self.progress.advance(self.task)
            if status != "ok":
                self.progress.console.print(f"[red]{label}: {status}")
            return
        elapsed = time.monotonic() - self.started
        self.console.print(f"[{self.done}/{self.total}] {label}: {status} ({elapsed:.0f} s)", highlight=False)
