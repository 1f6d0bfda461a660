"""Report formats: one registry, one ``render(source, out_path)`` signature for every format,
and the CLI's --format / --export choices taken from the registry. A format registered here
proves it: `hwmatrix report` offers it and renders through it."""
from __future__ import annotations

import importlib
import inspect
import json

import pytest

from agent.store.file import FileStore
from agent.store.keys import result_key
from coordinator import reports
from coordinator.cli.main import build_parser, main
from coordinator.reports import FORMATS, ReportFormat, format_names, register_format, report_format
from coordinator.reports.formats import ReportSource, write_text
from tests.test_bad_records import _record


def render_cells(source: ReportSource, out_path=None) -> str:
    """A one-line text format: the cell ids of the records."""
    return write_text("cells: " + " ".join(r["cell_id"] for r in source.records) + "\n", out_path)


def render_count(source: ReportSource, out_path=None) -> bytes:
    data = f"{len(source.records)} records".encode()
    if out_path is not None:
        with open(out_path, "wb") as f:
            f.write(data)
    return data


@pytest.fixture
def extra_formats():
    register_format(ReportFormat("cells", ".txt", f"{__name__}:render_cells", aliases=("ids",)))
    register_format(ReportFormat("count", ".bin", f"{__name__}:render_count", binary=True))
    yield
    del FORMATS["cells"], FORMATS["count"]


@pytest.fixture
def store(tmp_path):
    store = FileStore(tmp_path / "store")
    for cell in ("c1", "c2"):
        store.put(result_key("r1", cell, "a1"), json.dumps(_record(cell=cell)).encode())
    return store


def _cli_accepts(*argv: str) -> bool:
    try:
        build_parser().parse_args(["report", *argv])
        return True
    except SystemExit:
        return False


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_format_renders_through_the_one_signature(name):
    fmt = FORMATS[name]
    module, _, function = fmt.renderer.partition(":")
    render = getattr(importlib.import_module(module), function)
    assert list(inspect.signature(render).parameters) == ["source", "out_path"]
    assert fmt.suffix.startswith(".") and all(report_format(a) is fmt for a in (name, *fmt.aliases))


def test_the_cli_choices_are_the_registry_names_and_aliases():
    assert format_names(binary=False) == ["markdown", "md", "csv", "json", "html", "htm"]
    assert format_names(binary=True) == ["sqlite", "db", "sqlite3"]
    assert all(_cli_accepts("--format", name) for name in format_names(binary=False))
    assert all(_cli_accepts("--export", name) for name in format_names(binary=True))
    assert not _cli_accepts("--format", "sqlite") and not _cli_accepts("--export", "md")


def test_a_registered_format_is_offered_and_rendered_by_hwmatrix_report(extra_formats, store, tmp_path, capsys):
    assert _cli_accepts("--format", "cells") and _cli_accepts("--format", "ids")
    assert _cli_accepts("--export", "count") and not _cli_accepts("--format", "count")
    assert main(["report", "--store", store.url, "--format", "ids"]) == 0
    assert capsys.readouterr().out == "cells: c1 c2\n\n"
    out = tmp_path / "n.bin"
    assert main(["report", "--store", store.url, "--export", "count", "--out", str(out)]) == 0
    assert out.read_bytes() == b"2 records"
    assert main(["report", "--store", store.url, "--export", "count"]) == 2      # a binary format needs --out
    assert "--export count needs --out FILE" in capsys.readouterr().err


def test_render_picks_the_registered_format_by_name_or_alias(extra_formats, tmp_path):
    recs = [_record(cell="c9")]
    assert reports.render("CELLS", recs) == "cells: c9\n"
    out = tmp_path / "r.txt"
    assert reports.render("ids", recs, [], out_path=out) == out.read_text() == "cells: c9\n"
    with pytest.raises(ValueError, match="unknown report format 'pdf': use one of markdown, csv, json, html, "
                                         "sqlite, cells, count"):
        reports.render("pdf", recs)
