"""Reading the YAML files users write (jobs, search spaces, configs, cluster files), with one-line errors.

Every such file is read by :func:`read_yaml` with :class:`ConfigLoader`, PyYAML's safe loader made
strict where the safe loader is silently surprising:

- a key given twice in one mapping is an error (``file:line:column: duplicate key 'lr'``), not "the
  last one wins";
- ``1e-3``, ``1E5``, ``-2.5e-4``, ``+1e3`` are floats, as in YAML 1.2 (YAML 1.1 wants a dot and a signed
  exponent, so the safe loader reads them as strings); ``1e``, ``e5`` and ``1.2.3`` stay strings;
- aliases that expand to more than :data:`MAX_NODES` nodes ("billion laughs"), recursive aliases,
  mappings or lists nested deeper than :data:`MAX_DEPTH`, and files over :data:`MAX_BYTES` are refused
  before anything is built.

Every problem is a :class:`ConfigError` of one line naming the file, and the line and column where
there is one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, SequenceNode

from sentune.errors import ConfigError, one_line

__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "ConfigLoader", "loads_yaml", "read_yaml"]

MAX_BYTES = 4 * 1024 * 1024  # a config file is a few kB
MAX_DEPTH = 64  # mappings and lists nested in each other
MAX_NODES = 100_000  # scalars, lists and mappings, every alias counted as a full copy of its anchor

# YAML 1.2 core schema floats that YAML 1.1 (the safe loader's) reads as strings: an exponent without
# a dot or without a sign (1e-3, 1E5, +1e3, 1.0e3, .5e2). Forms YAML 1.1 reads already keep its resolver.
_FLOAT_12 = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$")
_QUOTE_LIMIT = 40  # characters of a key quoted in a message


class _TooBig(ConstructorError):
    pass


class ConfigLoader(yaml.SafeLoader):
    """The safe loader, strict: duplicate keys, alias bombs and deep nesting are errors, and YAML 1.2
    floats (``1e-3``) are floats."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _TooBig(None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _check_size(node)
        return node

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, OverflowError) as exc:  # e.g. !!int "x", a 5000-digit int, 2024-13-01
            raise ConstructorError(None, None, f"cannot read this value ({exc})", node.start_mark) from None

    def construct_mapping(self, node, deep=False):
        if isinstance(node, MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # '<<: *defaults': the mapping's own keys override merged ones
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:
                    continue  # unhashable: the safe loader says so
                if duplicate:
                    raise ConstructorError(None, None, f"duplicate key {_quote(key)}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+0123456789."))


def _check_size(root: Node) -> None:
    """Refuse a node graph whose expansion (every alias a copy of its anchor) holds more than
    MAX_NODES nodes or nests deeper than MAX_DEPTH, or that refers to itself. Linear in the number
    of distinct nodes."""
    known: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded size, expanded height)
    open_nodes: set[int] = set()

    def walk(node: Node, depth: int) -> tuple[int, int]:
        key = id(node)
        if key in open_nodes:
            raise _TooBig(None, None, "an alias refers to the list or mapping that holds it", node.start_mark)
        if key not in known:
            if depth > MAX_DEPTH:
                raise _TooBig(None, None, f"nested deeper than {MAX_DEPTH} levels (through aliases)", node.start_mark)
            children: list[Node] = []
            if isinstance(node, SequenceNode):
                children = list(node.value)
            elif isinstance(node, MappingNode):
                children = [n for pair in node.value for n in pair]
            open_nodes.add(key)
            total, height = 1, 0
            for child in children:
                size, child_height = walk(child, depth + 1)
                total += size
                height = max(height, child_height)
                if total > MAX_NODES:
                    raise _TooBig(None, None, f"expands to more than {MAX_NODES} values (aliases of aliases?)",
                                  node.start_mark)  # fmt: skip
            open_nodes.discard(key)
            known[key] = (total, height + 1)
        size, height = known[key]
        if depth - 1 + height > MAX_DEPTH:
            raise _TooBig(None, None, f"nested deeper than {MAX_DEPTH} levels (through aliases)", node.start_mark)
        return size, height

    walk(root, 1)


def _quote(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _QUOTE_LIMIT else text[: _QUOTE_LIMIT - 3] + "..."


def _where(source: str, text: str, index: int) -> str:
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return f"{source}:{line}:{column}"


def _yaml_error(source: str, text: str, exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "not valid YAML"
        if exc.context and exc.problem and exc.problem.startswith("but "):  # "expected ..., but found ..."
            problem = f"{exc.context}, {exc.problem}"
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        if isinstance(exc, ConstructorError) and exc.context is None:
            return one_line(f"{where}: {problem}")  # ours: duplicate key, too big, a bad value
        return one_line(f"{where}: not valid YAML: {problem}")
    if isinstance(exc, yaml.reader.ReaderError):  # a control character
        return one_line(
            f"{_where(source, text, exc.position)}: not valid YAML: unacceptable character #x{exc.character:04x}"
        )
    return one_line(f"{source}: not valid YAML: {exc}")


def loads_yaml(data: bytes | str, source: str) -> Any:
    """One YAML document from ``data`` (UTF-8 bytes, or text) with :class:`ConfigLoader`; ``source``
    names it in errors."""
    if isinstance(data, bytes):
        if len(data) > MAX_BYTES:
            raise ConfigError(one_line(f"{source}: {len(data)} bytes; a config file is at most {MAX_BYTES}"))
        nul = data.find(b"\0")
        if nul >= 0:
            line = data.count(b"\n", 0, nul) + 1
            raise ConfigError(one_line(f"{source}:{line}: holds a NUL byte: not a text file (UTF-8 YAML)"))
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise ConfigError(
                one_line(f"{source}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})")
            ) from None
    else:
        text = data
    try:
        return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 (ConfigLoader is a SafeLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_error(source, text, exc)) from None
    except RecursionError:  # MAX_DEPTH keeps well below Python's limit; this is the last guard
        raise ConfigError(one_line(f"{source}: nested too deeply")) from None


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    return f"a {type(value).__name__}"


def read_yaml(path: str | Path, what: str, *, mapping: bool = True) -> Any:
    """Parse the file ``path`` (``what`` it is, e.g. "job file"), a YAML mapping unless ``mapping`` is
    false; a missing, unreadable, empty or bad file is a one-line :class:`ConfigError` naming it."""
    path = Path(path)
    try:
        found = path.is_file()
        size = path.stat().st_size if found else 0
    except OSError as exc:  # e.g. a name too long
        raise ConfigError(one_line(f"{what} {path}: {exc.strerror or exc}")) from None
    if not found:
        raise ConfigError(one_line(f"{what} {path} not found"))
    if size > MAX_BYTES:
        raise ConfigError(one_line(f"{path}: {size} bytes; a {what} is at most {MAX_BYTES}"))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(one_line(f"{path}: cannot read the {what}: {exc.strerror or exc}")) from None
    value = loads_yaml(data, str(path))
    if mapping and value is None:
        raise ConfigError(one_line(f"{path}: the {what} is empty; it must be a YAML mapping (key: value lines)"))
    if mapping and not isinstance(value, dict):
        raise ConfigError(one_line(f"{path}: a {what} must be a YAML mapping (key: value lines), not {_kind(value)}"))
    return value
