"""Load YAML and remember where every key and item came from.

Matrix errors must name the line of the offending key, and pydantic only knows key paths;
this module keeps the map from key path to line so the two can be joined. It also refuses
duplicate keys, which plain PyYAML silently resolves to the last one, and it bounds what a
file can cost: at most ``FILE_MAX_BYTES`` of text, at most ``NODES_MAX`` nodes once every
alias and merge key is written out ("billion laughs" files expand exponentially), and no
control or bidi character that would make a value print as something it is not.
"""
from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from agent.spec.printable import find_steering, shown

MERGE_TAG = "tag:yaml.org,2002:merge"
FILE_MAX_BYTES = 256 << 10      # a real matrix is a few KB; PyYAML reads 75-250 KB a second
NODES_MAX = 1_000_000           # a file of that size without aliases holds at most about a quarter
MESSAGE_MAX = 300               # a message quotes values; a huge value must not make a huge message
# Every steering character (agent.spec.printable) but tab and line feed, which block scalars
# hold: the others move the cursor, recolour the terminal or reorder what is shown, so a
# tag or name holding one is not what it looks like.
_LAYOUT = "\t\n"              # tab and line feed


class MatrixError(Exception):
    """A matrix file that cannot be used; ``str()`` is one line: ``file:line: key: message``."""

    def __init__(self, file: str | Path | None, line: int | None, key: str | None, message: str):
        self.file = str(file) if file is not None else None
        self.line = line
        self.key = key or None
        self.message = " ".join(str(message).split())
        if len(self.message) > MESSAGE_MAX:
            self.message = self.message[:MESSAGE_MAX - 3] + "..."
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file or "<matrix>"
        if self.line:
            where += f":{self.line}"
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class DuplicateKey(MatrixError):
    """A key given twice in one mapping; ``first_line`` is where it was given first."""

    def __init__(self, file: str | Path | None, line: int, key: str, name: Any, first_line: int):
        super().__init__(file, line, key, f"duplicate key {shown(name)} (first given on line {first_line})")
        self.first_line = first_line


Lines = dict[tuple, int]


def format_key(path: tuple) -> str:
    """``("matrix", "quant", 1)`` -> ``matrix.quant[1]``: how errors name a key."""
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif isinstance(part, str) and (not part or not part.isprintable() or len(part) > 60):
            out += f"[{shown(part)}]"   # a key with a line break (or none at all) must not break the one-line error
        else:
            out += f".{part}" if out else str(part)
    return out


def hidden_character(text: str) -> str | None:
    """``U+202E (RIGHT-TO-LEFT OVERRIDE)`` for the first control or bidi character in text, or None."""
    i = find_steering(text, allow=_LAYOUT)
    if i is None:
        return None
    ch = text[i]
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X}" + (f" ({name})" if name else "")


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, counting nodes as it composes them as if every alias were written out.

    An alias costs what its anchor holds, so a merge key ``<<: [*a, *a]`` costs two copies
    of ``a``: the count is the size of the document the constructor would build, known
    before it is built. Past ``NODES_MAX``, or at a scalar holding a hidden character, the
    file is refused at that line and key.
    """

    def __init__(self, text: str, file: str):
        super().__init__(text)
        self.file = file
        self.sizes: dict[int, int] = {}     # id(node) -> its nodes, aliases written out
        self.nodes = 0                      # the document's nodes so far, aliases written out
        self.path: list = []

    def compose_node(self, parent, index):
        part = index if isinstance(index, int) else index.value if isinstance(index, ScalarNode) else None
        if part is not None:
            self.path.append(part)
        try:
            if self.check_event(AliasEvent):
                self._alias(self.peek_event())
                return super().compose_node(parent, index)
            node = super().compose_node(parent, index)
            self._composed(node, is_key=parent is not None and index is None)
            return node
        finally:
            if part is not None:
                self.path.pop()

    def _alias(self, event) -> None:
        target = self.anchors.get(event.anchor)
        if target is None:
            return                          # PyYAML reports the undefined alias
        size = self.sizes.get(id(target))
        if size is None:
            self._refuse(event.start_mark, f"alias *{shown(event.anchor)[1:-1]} is used inside the node "
                         "it names; a recursive alias cannot be written out")
        self.nodes += size
        if self.nodes > NODES_MAX:
            self._refuse(event.start_mark, f"alias *{shown(event.anchor)[1:-1]} copies {size:,} nodes: with "
                         f"its aliases and merge keys ('<<') written out the file holds more than {NODES_MAX:,} "
                         "nodes (a \"billion laughs\" file)")

    def _composed(self, node: Node, is_key: bool) -> None:
        if isinstance(node, ScalarNode):
            self.sizes[id(node)] = 1
            hidden = hidden_character(node.value)
            if hidden:
                where = [node.value] if is_key else []
                self._refuse(node.start_mark, f"holds the control character {hidden}; control and bidi "
                             "characters are refused, as they can make text show as something it is not", where)
        elif isinstance(node, SequenceNode):
            self.sizes[id(node)] = 1 + sum(self.sizes[id(item)] for item in node.value)
        else:
            self.sizes[id(node)] = 1 + sum(self.sizes[id(k)] + self.sizes[id(v)] for k, v in node.value)
        self.nodes += 1
        if self.nodes > NODES_MAX:
            self._refuse(node.start_mark, f"the file holds more than {NODES_MAX:,} nodes")

    def _refuse(self, mark, message: str, more: list = ()) -> None:
        raise MatrixError(self.file, mark.line + 1, format_key(tuple(self.path) + tuple(more)), message)


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
                raise DuplicateKey(file, line, format_key(path + (key,)), key, keys[key])
            keys[key] = line
            lines[path + (key,)] = line
            _walk(loader, value_node, path + (key,), lines, file, seen)
    elif isinstance(node, SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _walk(loader, item, path + (i,), lines, file, seen)


def parse_with_lines(text: str, file: str | Path = "<string>", what: str = "matrix file") -> tuple[Any, Lines]:
    """Parse YAML text; return (data, lines). See :func:`load_with_lines`."""
    file = str(file)
    if len(text) > FILE_MAX_BYTES:
        raise MatrixError(file, None, None, f"{len(text):,} characters is more than a {what} may "
                          f"hold ({FILE_MAX_BYTES:,} bytes)")
    loader = None
    try:
        loader = _BoundedLoader(text, file)     # the reader refuses raw control characters right here
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
        char = chr(exc.character) if isinstance(exc.character, int) else exc.character
        at = text.find(char) if isinstance(char, str) and char else -1
        line = text.count("\n", 0, at) + 1 if at >= 0 else None
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


def load_with_lines(path: str | Path, what: str = "matrix file") -> tuple[Any, Lines]:
    """Load a YAML file; ``lines`` maps key paths such as ``("matrix", "quant", 1)`` to 1-based lines.

    Syntax errors, duplicate keys, unreadable files and files over ``FILE_MAX_BYTES`` (refused
    before they are read) raise :class:`MatrixError`; ``what`` names the file in messages.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(FILE_MAX_BYTES + 1)
        if len(data) > FILE_MAX_BYTES:
            raise MatrixError(path, None, None, f"larger than {FILE_MAX_BYTES:,} bytes, the most a {what} "
                              "may hold")
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MatrixError(path, None, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise MatrixError(path, None, None, f"cannot read: {exc.strerror or exc}") from None
    return parse_with_lines(text, path, what)
