"""Reading the YAML configuration file, whatever the file turns out to be.

The file (``GUNICORN_PROM_EXT_CONFIG``, or check-config's FILE) is read in the gunicorn
master before it serves, so a hostile or mistaken one must cost one clear error within a
second, never a hang, a traceback or gigabytes:

* only a regular file is read, opened non-blocking (a FIFO would block the open and the
  read forever, /dev/zero never ends), and at most MAX_FILE_BYTES of it;
* nesting is bounded while the document is composed (the composer recurses: 50,000 nested
  lists end in RecursionError), and the node graph is measured before anything is built
  from it: aliases, merge keys included, may not expand it beyond MAX_VALUES values nor
  MAX_DEPTH levels ("billion laughs"), nor refer to themselves;
* numbers are decimal ASCII: YAML 1.1's ``9_0_9_1``, ``0x2383``, ``017`` (octal) and
  ``1:30`` (sexagesimal) stay strings, so the setting reports them, as the environment does.
"""

from __future__ import annotations

import math
import os
import re
import stat
from typing import Any, ClassVar

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from .values import shorten

MAX_FILE_BYTES = 64 * 1024  # a configuration is a few hundred bytes; this parses in ~0.3 s
MAX_DEPTH = 20  # levels of nesting, aliases expanded (a valid file has 4)
MAX_VALUES = 10_000  # scalars and collections, aliases expanded

_MAX_DIGITS = 30
_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_STR_TAG = "tag:yaml.org,2002:str"
_STRICT_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_STRICT_FLOAT = re.compile(
    r"[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
)
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)  # fmt: skip


class FileRefused(Exception):
    """The file itself cannot be used (missing, not a regular file, too big, not UTF-8)."""

    def __init__(self, expected: str, got: str) -> None:
        super().__init__(f"expected {expected}, got {got}")
        self.expected = expected
        self.got = got


class ContentRefused(Exception):
    """The text is not a YAML document within bounds; ``where`` is "line L, column C"."""

    def __init__(self, where: str, expected: str, got: str) -> None:
        super().__init__(f"{where}: expected {expected}, got {got}")
        self.where = where
        self.expected = expected
        self.got = got


def read_document(path: str) -> object:
    """The YAML document in the file at ``path`` (None if empty); FileRefused or
    ContentRefused otherwise."""
    text = _read_text(path)
    try:
        # The reader checks every character when it is made: inside the try.
        loader = _BoundedLoader(text)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - text.rfind("\n", 0, exc.position)
        got = f"the character #x{exc.character:04x} ({exc.reason})"
        raise ContentRefused(f"line {line}, column {column}", "valid YAML", got) from None
    try:
        return loader.get_single_data()
    except ContentRefused:
        raise
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        detail = getattr(exc, "problem", None) or str(exc)
        raise ContentRefused(_where(mark), "valid YAML", _one_line(str(detail))) from None
    except Exception as exc:
        # PyYAML's constructors let their own errors through: int() refusing 5000 digits,
        # AttributeError from a `!!timestamp` that is no date, ...
        got = f"a value its tag cannot be made from ({type(exc).__name__}: {exc})"
        raise ContentRefused("document", "valid YAML", _one_line(got)) from None
    finally:
        loader.dispose()


def _one_line(text: str) -> str:
    return shorten(" ".join(text.split()), 200)


def _read_text(path: str) -> str:
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise FileRefused("a readable YAML file", exc.strerror or str(exc)) from None
    except ValueError:  # NUL in the path
        raise FileRefused("a readable YAML file", "a path with a NUL character") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((name for test, name in _FILE_KINDS if test(info.st_mode)), "not a file")
            raise FileRefused("a readable YAML file (a regular file)", kind)
        if info.st_size > MAX_FILE_BYTES:
            raise FileRefused(f"a YAML file of at most {MAX_FILE_BYTES // 1024} KiB",
                              f"{info.st_size} bytes")  # fmt: skip
        # fstat's size may be 0 for files that still have content (/proc): read one byte
        # more than allowed to know.
        data = _read_at_most(fd, MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise FileRefused("a readable YAML file", exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise FileRefused(f"a YAML file of at most {MAX_FILE_BYTES // 1024} KiB",
                          f"more than {MAX_FILE_BYTES} bytes")  # fmt: skip
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise FileRefused("a UTF-8 YAML file", "binary data") from None


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = os.read(fd, limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _where(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "document"


def _construct_int(loader: yaml.SafeLoader, node: Node) -> int:
    # An explicit !!int (the implicit ones are filtered in resolve()).
    value = loader.construct_scalar(node)  # type: ignore[arg-type]
    if not _STRICT_INT.fullmatch(value):
        raise ContentRefused(_where(node.start_mark), "an integer in decimal ASCII digits",
                             repr(shorten(value)))  # fmt: skip
    if len(value.lstrip("+-")) > _MAX_DIGITS:  # no setting goes that far; int() is slow there
        raise ContentRefused(_where(node.start_mark), f"an integer of at most {_MAX_DIGITS} "
                             "digits", f"{len(value.lstrip('+-'))} digits")  # fmt: skip
    return int(value)


def _construct_float(loader: yaml.SafeLoader, node: Node) -> float:
    value = loader.construct_scalar(node)  # type: ignore[arg-type]
    if not _STRICT_FLOAT.fullmatch(value):
        raise ContentRefused(_where(node.start_mark), "a number in decimal ASCII digits",
                             repr(shorten(value)))  # fmt: skip
    lowered = value.lower()
    if lowered.endswith(".nan"):
        return math.nan
    if lowered.endswith(".inf"):
        return -math.inf if lowered.startswith("-") else math.inf
    return float(value)


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader with bounded nesting and expansion and decimal-only numbers."""

    # A copy, so SafeLoader's own table (shared by every yaml.safe_load) is left alone.
    yaml_constructors: ClassVar[dict[str | None, Any]] = {
        **yaml.SafeLoader.yaml_constructors,
        _INT_TAG: _construct_int,
        _FLOAT_TAG: _construct_float,
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        if self._depth >= MAX_DEPTH:
            raise ContentRefused(_where(mark), f"at most {MAX_DEPTH} levels of nesting",
                                 "deeper nesting")  # fmt: skip
        self._nodes += 1  # aliases included; _measure counts what they expand to
        if self._nodes > MAX_VALUES:
            raise ContentRefused(_where(mark), f"at most {MAX_VALUES} values",
                                 f"more than {MAX_VALUES}")  # fmt: skip
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Node | None:
        node = super().compose_document()
        if node is not None:
            _measure(node)
        return node

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        tag = super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]
        if tag == _INT_TAG and not _STRICT_INT.fullmatch(value):
            return _STR_TAG
        if tag == _FLOAT_TAG and not _STRICT_FLOAT.fullmatch(value):
            return _STR_TAG
        return tag


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [item for pair in node.value for item in pair]
    return []


def _measure(root: Node) -> None:
    """Refuse a node graph that, aliases expanded, holds more than MAX_VALUES values, is
    deeper than MAX_DEPTH, or contains itself. Each distinct node is visited once, so this
    costs what the file's size allows, not what its aliases would expand to."""
    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth), expanded
    in_progress: set[int] = set()  # the nodes on the current path: a cycle if seen again
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            children = [measured[id(child)] for child in _children(node)]
            values = 1 + sum(count for count, _ in children)
            depth = 1 + max((d for _, d in children), default=0)
            in_progress.discard(key)
            if values > MAX_VALUES:
                raise ContentRefused(_where(node.start_mark),
                                     f"at most {MAX_VALUES} values once aliases are expanded",
                                     f"{_count(values)} (an alias bomb?)")  # fmt: skip
            if depth > MAX_DEPTH:
                raise ContentRefused(_where(node.start_mark),
                                     f"at most {MAX_DEPTH} levels of nesting once aliases are "
                                     "expanded", f"{depth} levels")  # fmt: skip
            measured[key] = (values, depth)
            continue
        if key in measured:
            continue
        if key in in_progress:
            raise ContentRefused(_where(node.start_mark), "aliases that do not contain themselves",
                                 "a recursive alias")  # fmt: skip
        in_progress.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in measured)


def _count(values: int) -> str:
    return str(values) if values < 10**9 else "more than a billion"
