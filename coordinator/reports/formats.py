"""What a report format is: one entry of the registry in ``coordinator.reports``, and the
one call every format answers, ``render(source, out_path) -> str | bytes``.

An entry names its renderer as ``"module:function"``, imported when a report of that
format is made: the formats need the report model (pydantic, the cross-checks) and HTML
needs matplotlib, which the CLI should not import to build its parser.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ReportSource:
    """What every format renders from: checked records, the A/B comparisons computed with
    ``correction`` and ``ci_level`` (they only label the A/B table), and the skipped records."""
    records: list[dict]
    comparisons: list[dict] | None = None
    skipped: list | None = None
    correction: str = "holm"
    ci_level: float = 0.95


OutPath = str | os.PathLike | None
Render = Callable[[ReportSource, OutPath], str | bytes]


@dataclass(frozen=True)
class ReportFormat:
    name: str
    suffix: str                          # of the file it is written to: ".md"
    renderer: str                        # "module:function", a Render
    binary: bool = False                 # bytes (the CLI's --export, needs --out), else text (--format)
    aliases: tuple[str, ...] = ()

    def render(self, source: ReportSource, out_path: OutPath = None) -> str | bytes:
        """The report; with ``out_path`` also written there."""
        module, _, function = self.renderer.partition(":")
        return getattr(importlib.import_module(module), function)(source, out_path)


def write_text(text: str, out_path: OutPath) -> str:
    """A text format's output, written to ``out_path`` as is (no newline translation)."""
    if out_path is not None:
        Path(out_path).write_text(text, encoding="utf-8", newline="")
    return text
