"""YAML with line numbers: plain Python values plus a map from each path to its line."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

Path = tuple[str | int, ...]
ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# A whole unquoted value such as ``api_key: ${OPENAI_API_KEY}}`` is not valid YAML inside a
# flow mapping ({ } are flow indicators); quote it before parsing, keeping every line in place.
BARE_ENV_VALUE = re.compile(r"(?<=[:\[,]\s)(\$\{[^}\"'\s]*\})(?=\s*(?:[,}\]]|#|$))", re.MULTILINE)


class YamlSyntaxError(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def load_located(text: str) -> tuple[Any, dict[Path, int]]:
    """Parse ``text``; return plain values and the 1-based line of every key and item."""
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        document = yaml.load(BARE_ENV_VALUE.sub(r'"\1"', text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise YamlSyntaxError(line, " ".join(str(p) for p in (exc.context, exc.problem) if p)) from None
    lines: dict[Path, int] = {(): 1}
    return _plain(document, (), lines), lines


def _plain(node: Any, path: Path, lines: dict[Path, int]) -> Any:
    if isinstance(node, CommentedMap):
        result = {}
        for key, value in node.items():
            child = (*path, str(key))
            lines[child] = node.lc.key(key)[0] + 1
            result[str(key)] = _plain(value, child, lines)
        return result
    if isinstance(node, CommentedSeq):
        items = []
        for index, value in enumerate(node):
            child = (*path, index)
            lines[child] = node.lc.item(index)[0] + 1
            items.append(_plain(value, child, lines))
        return items
    if isinstance(node, str):
        return str(node)
    return node


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


def interpolate(value: Any, env: Mapping[str, str], path: Path, unset: dict[Path, list[str]]) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}``; record each unset ``${VAR}`` by path."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, (*path, k), unset) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, (*path, i), unset) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if env.get(name):
            return env[name]
        if default is not None:
            return default
        unset.setdefault(path, []).append(name)
        return ""

    return ENV_REFERENCE.sub(substitute, value)
