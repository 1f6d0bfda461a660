"""Reading a matrix file: YAML with its line map, the schema, then the whole-file checks.

Either way the first problem becomes one :class:`MatrixError`, placed on the line of the
offending key. Nothing here costs more than the file's size allows: the cells are counted
from the axes before any is built and refused above ``max_cells``, include and exclude hold
at most ``ENTRIES_MAX`` entries each, duplicate checks use sets, and messages quote values
with :func:`agent.spec.printable.shown`, so a huge value never makes a huge message.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.spec.yaml_lines import Lines, MatrixError, format_key, load_with_lines
from coordinator.matrix.messages import data_path, message, nearest_line
from coordinator.matrix.schema import Matrix
from coordinator.matrix.vocabulary import MAX_CELLS
from coordinator.matrix.whole_file import Invalid, check


def validate_matrix(data: Any, lines: Lines | None = None, file: str | Path = "<matrix>", *,
                    max_cells: int = MAX_CELLS) -> Matrix:
    """Validate parsed YAML into a :class:`Matrix`; the first problem raises :class:`MatrixError`.

    More than ``max_cells`` cells is a problem too, found by counting before expanding.
    """
    lines = lines or {}
    if not isinstance(data, dict):
        raise MatrixError(file, lines.get(()), None,
                          "a matrix file must be a mapping with name:, engines:, models: and matrix:")
    try:
        matrix = Matrix.model_validate(data)
        check(matrix, max_cells)
        return matrix
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        # A missing key is reported on its parent; every other key exists in the file.
        path = data_path(data, err["loc"], keep_last=False)
        raise MatrixError(file, nearest_line(lines, path), format_key(path), message(err, data)) from None
    except Invalid as exc:
        path = data_path(data, exc.loc, keep_last=False)
        raise MatrixError(file, nearest_line(lines, path), format_key(path), exc.message) from None


def load_matrix(path: str | Path, max_cells: int = MAX_CELLS) -> Matrix:
    """Read and validate a matrix file; any problem raises a one-line :class:`MatrixError`."""
    data, lines = load_with_lines(path)
    return validate_matrix(data, lines, path, max_cells=max_cells)
