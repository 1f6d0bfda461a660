"""Load YAML and remember where every key and item came from.

Matrix errors must name the line of the offending key, and pydantic only knows key paths;
this module keeps the map from key path to line so the two can be joined. It also refuses
duplicate keys, which plain PyYAML silently resolves to the last one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

MERGE_TAG = "tag:yaml.org,2002:merge"


class MatrixError(Exception):
    """A matrix file that cannot be used; ``str()`` is one line: ``file:line: key: message``."""

    def __init__(self, file: str | Path | None, line: int | None, key: str | None, message: str):
        self.file = str(file) if file is not None else None
        self.line = line
        self.key = key or None
        self.message = " ".join(str(message).split())
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file or "<matrix>"
        if self.line:
            where += f":{self.line}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


Lines = dict[tuple, int]


def format_key(path: tuple) -> str:
    """``("matrix", "quant", 1)`` -> ``matrix.quant[1]``: how errors name a key."""
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif isinstance(part, str) and (not part or not part.isprintable()):
            out += f"[{part!r}]"    # a key with a line break (or none at all) must not break the one-line error
        else:
            out += f".{part}" if out else str(part)
    return out


def _key_value(loader: yaml.SafeLoader, node: Node) -> Any:
    """The Python value of a mapping key, hashable (non-scalar keys become their text)."""
    if isinstance(node, ScalarNode):
        return loader.construct_object(node, deep=True)
    return f"<{node.id}@{node.start_mark.line + 1}>"


def _walk(loader, node: Node, path: tuple, lines: Lines, file: str, seen: set[int]) -> None:
    # An alias re-visits the same node; walking it once keeps cycles and "billion laughs"
    # documents cheap (aliased paths then fall back to their parent's line).
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, MappingNode):
        keys: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                continue
            key = _key_value(loader, key_node)
            line = key_node.start_mark.line + 1
            if key in keys:
                raise MatrixError(file, line, format_key(path + (key,)),
                                  f"duplicate key {key!r} (first given on line {keys[key]})")
            keys[key] = line
            lines[path + (key,)] = line
            _walk(loader, value_node, path + (key,), lines, file, seen)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _walk(loader, item, path + (i,), lines, file, seen)


def parse_with_lines(text: str, file: str | Path = "<string>") -> tuple[Any, Lines]:
    """Parse YAML text; return (data, lines). See :func:`load_with_lines`."""
    file = str(file)
    loader = None
    try:
        loader = yaml.SafeLoader(text)     # the reader refuses control characters right here
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines: Lines = {(): node.start_mark.line + 1}
        _walk(loader, node, (), lines, file, set())
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        raise MatrixError(file, mark.line + 1 if mark else None, None,
                          f"YAML syntax error: {problem}") from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1 if isinstance(exc.position, int) else None
        char = chr(exc.character) if isinstance(exc.character, int) else exc.character
        raise MatrixError(file, line, None, f"YAML error: character {char!r} is not allowed "
                          "(control characters cannot appear in YAML)") from None
    except yaml.YAMLError as exc:
        raise MatrixError(file, None, None, f"YAML error: {exc}") from None
    except RecursionError:
        raise MatrixError(file, None, None, "YAML nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, lines


def load_with_lines(path: str | Path) -> tuple[Any, Lines]:
    """Load a YAML file; ``lines`` maps key paths such as ``("matrix", "quant", 1)`` to 1-based lines.

    Syntax errors, duplicate keys and unreadable files raise :class:`MatrixError`.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise MatrixError(path, None, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise MatrixError(path, None, None, f"cannot read: {exc.strerror or exc}") from None
    return parse_with_lines(text, path)
