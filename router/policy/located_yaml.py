"""YAML with line numbers: plain Python values plus a map from each path to its line.

A policy holds plain data only, so the YAML is composed into nodes and converted here,
never handed to a constructor that could build arbitrary objects:

- Tags other than YAML's own plain types (``!!str``, ``!!int``, ``!!float``, ``!!bool``,
  ``!!null``, ``!!map``, ``!!seq``) are errors: ``!!python/object/apply:os.system`` is
  refused at its line, and so are ``!!set``, ``!!binary`` and application tags (``!foo``).
  Dates stay the text they were written as.
- Anchors, aliases and merge keys (``<<: *shared``) are allowed, because sharing a block
  (a price, a set of timeouts) is a real use, but their expansion is bounded: at most
  ``MAX_VALUES`` values after every alias is expanded and ``MAX_DEPTH`` levels of nesting,
  and an alias inside its own anchor is refused. A "billion laughs" file (seven lines that
  expand to 9⁷ values) stops at the bound, at the line where it was reached.
- A duplicate key is an error, never a silent override.

Every problem is a ``YamlError`` with its 1-based line and, when known, its path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer, MaxDepthExceededError
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

Path = tuple[str | int, ...]
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# A whole unquoted value such as ``api_key: ${OPENAI_API_KEY}}`` is not valid YAML inside a
# flow mapping ({ } are flow indicators); quote it before parsing, keeping every line in place.
BARE_ENV_VALUE = re.compile(r"(?<=[:\[,]\s)(\$\{[^}\"'\s]*\})(?=\s*(?:[,}\]]|#|$))", re.MULTILINE)

# A policy nests six levels deep (rules[0].when.prompt_tokens.gt); 32 leaves room for any
# future shape and keeps the recursive conversion far from Python's recursion limit.
MAX_DEPTH = 32
# Values after alias expansion. The shipped policies hold under 1,000; 100,000 allows some
# 8,000 client keys and bounds the work a reload can be made to do to about a second.
MAX_VALUES = 100_000

YAML_TAG = "tag:yaml.org,2002:"
PLAIN_SCALAR_TAGS = frozenset(YAML_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp"))
TEXT_TAGS = frozenset((YAML_TAG + "str", YAML_TAG + "timestamp"))
MAP_TAG = YAML_TAG + "map"
SEQ_TAG = YAML_TAG + "seq"
MERGE_TAG = YAML_TAG + "merge"


class YamlError(Exception):
    """A YAML problem at ``line`` (1-based); ``path`` is set once the value's place is known."""

    def __init__(self, line: int, message: str, path: Path | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.message = message
        self.path = path


class _Composer(Composer):
    """ruamel's composer without its warning on a reused anchor (valid YAML, and a warning
    would print to stderr from whatever thread loads the policy)."""

    def __init__(self, loader: Any = None) -> None:
        super().__init__(loader)
        self.warn_double_anchors = False


def load_located(text: str) -> tuple[Any, dict[Path, int]]:
    """Parse ``text``; return plain values and the 1-based line of every key and item."""
    yaml = YAML(typ="safe", pure=True)
    yaml.Composer = _Composer
    yaml.max_depth = MAX_DEPTH
    try:
        root = yaml.compose(BARE_ENV_VALUE.sub(r'"\1"', text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        if isinstance(exc, MaxDepthExceededError):
            raise YamlError(line, f"nested deeper than {MAX_DEPTH} levels") from None
        raise YamlError(line, " ".join(str(p) for p in (exc.context, exc.problem) if p)) from None
    except YAMLError as exc:  # the reader's unacceptable characters: no mark, a position
        raise YamlError(1, str(exc).splitlines()[0]) from None
    converter = _Converter(yaml.constructor)
    if root is None:
        return None, converter.lines
    _Expansion().measure(root, ())
    return converter.value(root, ()), converter.lines


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _tag_name(tag: str | None) -> str:
    tag = str(tag)
    return "!!" + tag.removeprefix(YAML_TAG) if tag.startswith(YAML_TAG) else tag


class _Expansion:
    """Measures what the document expands to before anything is expanded: each node's size
    and depth are worked out once (an alias reuses its anchor's figures), so a bomb is
    refused in time linear in the file, at the first value whose expansion is too big."""

    def __init__(self) -> None:
        self.measured: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth)
        self.open_nodes: set[int] = set()  # collections being measured: an alias to one is a cycle

    def measure(self, node: Node, path: Path) -> tuple[int, int]:
        known = self.measured.get(id(node))
        if known is not None:
            return known
        if isinstance(node, ScalarNode):
            return 1, 0
        if id(node) in self.open_nodes:
            raise YamlError(_line(node), "an alias refers to the value that contains it (a recursive structure)", path)
        self.open_nodes.add(id(node))
        values, depth = 1, 0
        children = node.value if isinstance(node, SequenceNode) else [v for _, v in node.value]
        for index, child in enumerate(children):
            child_path = (*path, index if isinstance(node, SequenceNode) else str(node.value[index][0].value))
            child_values, child_depth = self.measure(child, child_path)
            values += child_values
            depth = max(depth, child_depth + 1)
        self.open_nodes.discard(id(node))
        if values > MAX_VALUES:
            raise YamlError(
                _line(node),
                f"expands to more than {MAX_VALUES} values once aliases are expanded; a policy is never this big",
                path,
            )
        if len(path) + depth > MAX_DEPTH:
            raise YamlError(_line(node), f"nested deeper than {MAX_DEPTH} levels once aliases are expanded", path)
        self.measured[id(node)] = values, depth
        return values, depth


class _Converter:
    """Composed nodes (already measured) → plain dicts, lists and scalars."""

    def __init__(self, constructor: Any) -> None:
        self.constructor = constructor
        self.lines: dict[Path, int] = {(): 1}

    def value(self, node: Node, path: Path) -> Any:
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        tag = node.tag
        if isinstance(node, SequenceNode) and tag == SEQ_TAG:
            return self.sequence(node, path)
        if isinstance(node, MappingNode) and tag == MAP_TAG:
            return self.mapping(node, path)
        raise self.tag_error(node, path)

    def scalar(self, node: ScalarNode, path: Path) -> Any:
        tag = node.tag
        if tag in TEXT_TAGS:
            return str(node.value)
        if tag not in PLAIN_SCALAR_TAGS:
            raise self.tag_error(node, path)
        try:
            return self.constructor.construct_object(node, deep=True)
        except (ValueError, YAMLError):
            raise YamlError(_line(node), f"not a valid {_tag_name(node.tag)} value", path) from None

    def sequence(self, node: SequenceNode, path: Path) -> list[Any]:
        items = []
        for index, item in enumerate(node.value):
            child = (*path, index)
            self.lines[child] = _line(item)
            items.append(self.value(item, child))
        return items

    def mapping(self, node: MappingNode, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = {}
        explicit: dict[str, int] = {}
        pairs: list[tuple[Node, Node]] = node.value
        for key_node, value_node in pairs:
            if key_node.tag == MERGE_TAG:
                self.merge(result, value_node, path)
        for key_node, value_node in pairs:
            if key_node.tag == MERGE_TAG:
                continue
            key = self.key(key_node, path)
            line = _line(key_node)
            if key in explicit:
                raise YamlError(line, f"found duplicate key '{key}' (first at line {explicit[key]})")
            explicit[key] = line
            child = (*path, key)
            self.lines[child] = line
            result[key] = self.value(value_node, child)
        return result

    def merge(self, result: dict[str, Any], source: Node, path: Path) -> None:
        """``<<: *a`` or ``<<: [*a, *b]``: keys not already present (earlier sources win)."""
        sources = source.value if isinstance(source, SequenceNode) and source.tag == SEQ_TAG else [source]
        for mapping in sources:
            if not isinstance(mapping, MappingNode):
                raise YamlError(_line(mapping), "a merge key (<<) takes a mapping or a list of mappings", path)
            for key, value in self.value(mapping, path).items():
                result.setdefault(key, value)

    def key(self, node: Node, path: Path) -> str:
        if not isinstance(node, ScalarNode):
            raise YamlError(_line(node), "a mapping key must be a plain value, not a list or a mapping", path)
        if node.tag not in PLAIN_SCALAR_TAGS:
            raise self.tag_error(node, path)
        return str(node.value)

    @staticmethod
    def tag_error(node: Node, path: Path) -> YamlError:
        return YamlError(
            _line(node),
            f"YAML tag {_tag_name(node.tag)} is not allowed: a policy holds plain values only "
            "(strings, numbers, booleans, lists, mappings)",
            path,
        )


def line_of(lines: Mapping[Path, int], path: Path) -> int:
    """The line of ``path`` or of its nearest located ancestor."""
    for end in range(len(path), -1, -1):
        if path[:end] in lines:
            return lines[path[:end]]
    return 1


def format_path(path: Path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def interpolate(
    value: Any, env: Mapping[str, str], path: Path, unset: dict[Path, list[str]], used: dict[str, str] | None = None
) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}``; record each unset ``${VAR}`` by path and,
    in ``used``, each variable taken from ``env`` with its value (for redacting messages)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, (*path, k), unset, used) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, (*path, i), unset, used) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if env.get(name):
            if used is not None:
                used[name] = env[name]
            return env[name]
        if default is not None:
            return default
        unset.setdefault(path, []).append(name)
        return ""

    return ENV_REFERENCE.sub(substitute, value)


def redact(message: str, used: Mapping[str, str]) -> str:
    """``message`` with the value of every interpolated variable shown as ``${VAR}``."""
    for name, value in sorted(used.items(), key=lambda item: -len(item[1])):
        message = message.replace(value, "${" + name + "}")
    return message
