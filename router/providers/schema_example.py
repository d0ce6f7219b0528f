"""A valid instance of a JSON schema, for the simulated provider's tool arguments and structured output.

Covers what tool ``parameters`` and ``response_format`` schemas use in practice (OpenAI strict
mode, pydantic's ``model_json_schema``, hand-written tool schemas): ``$ref`` into ``$defs`` /
``definitions`` with siblings, ``allOf`` (merged), ``anyOf`` / ``oneOf`` (one branch), ``enum``,
``const``, type lists, nested objects (every required property, optional ones near the top, never
an undeclared one), arrays (``minItems`` / ``maxItems``, ``prefixItems``, ``uniqueItems``),
numeric bounds and ``multipleOf``, string lengths, common ``format`` values and simple
``pattern`` s. Values come from the caller's ``random.Random`` so the same request gets the same
instance. Recursive schemas end: below ``SHALLOW`` optional parts are left out, arrays are as
short as allowed and a nullable branch is preferred.
"""

from __future__ import annotations

import math
import random
import re
import uuid
from typing import Any

MAX_DEPTH = 12  # a schema that recurses through required parts only has no finite instance
SHALLOW = 3  # below this depth: no optional properties, shortest arrays, nullable branches
DEFAULT_SPAN = 100
UNIQUE_TRIES = 16

FORMATS = {
    "date-time": "2025-06-01T12:00:00Z",
    "date": "2025-06-01",
    "time": "12:00:00",
    "duration": "P1D",
    "email": "simulated@example.com",
    "idn-email": "simulated@example.com",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uri": "https://example.com/simulated",
    "uri-reference": "https://example.com/simulated",
    "iri": "https://example.com/simulated",
    "url": "https://example.com/simulated",
    "json-pointer": "/simulated",
    "regex": ".*",
    "byte": "c2ltdWxhdGVk",
    "binary": "simulated",
    "password": "simulated",
}
PATTERN_ESCAPES = {"d": "1", "w": "a", "s": " ", "D": "a", "W": "-", "S": "a", "b": "", "B": "", "A": "", "Z": ""}
PATTERN_CANDIDATES = ("simulated", "abc", "ABC", "a1", "A1", "123", "1", "a", "A", "abc-123", "a_b", "2025-06-01")


def example_for(schema: Any, rng: random.Random | None = None) -> Any:
    """An instance of ``schema`` (a JSON schema as parsed JSON)."""
    return _Builder(schema, rng or random.Random(0)).value(schema, 0, "")


class _Builder:
    def __init__(self, root: Any, rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.taken: list[Any] = []  # items already in a uniqueItems array: enum and boolean draws avoid them

    def value(self, schema: Any, depth: int, name: str) -> Any:
        if schema is True or schema == {}:
            return self._string({}, name)
        if not isinstance(schema, dict) or depth > MAX_DEPTH:
            return None
        schema = self._flatten(schema, depth)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self.rng.choice([v for v in schema["enum"] if v not in self.taken] or schema["enum"])
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                siblings = {k: v for k, v in schema.items() if k != key}
                return self.value({**siblings, **self._branch(branches, depth)}, depth + 1, name)
        kind = self._kind(schema, depth)
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth, name)
        if kind == "integer":
            return self._integer(schema)
        if kind == "number":
            return self._number(schema)
        if kind == "boolean":
            return self.rng.choice([v for v in (True, False) if v not in self.taken] or [True])
        if kind == "null":
            return None
        return self._string(schema, name)

    def _flatten(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        """``$ref`` resolved (siblings kept) and ``allOf`` merged into one schema."""
        for _ in range(MAX_DEPTH):
            if isinstance(schema.get("$ref"), str):
                target = self._resolve(schema["$ref"])
                siblings = {k: v for k, v in schema.items() if k != "$ref"}
                schema = {**target, **siblings} if isinstance(target, dict) else siblings
            elif isinstance(schema.get("allOf"), list):
                merged = {k: v for k, v in schema.items() if k != "allOf"}
                for part in schema["allOf"]:
                    if isinstance(part, dict):
                        merged = _merge(merged, self._flatten(part, depth))
                schema = merged
            else:
                break
        return schema

    def _resolve(self, ref: str) -> Any:
        if not ref.startswith("#"):
            return {}
        node = self.root
        for part in ref[1:].lstrip("/").split("/") if ref != "#" else ():
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict):
                node = node.get(part, {})
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return {}
        return node

    def _branch(self, branches: list[Any], depth: int) -> dict[str, Any]:
        """The first branch that is not null; near the recursion limit a null or a non-reference one."""
        usable = [b if isinstance(b, dict) else {} for b in branches]
        if depth >= SHALLOW:
            for candidate in usable:
                if candidate.get("type") == "null":
                    return candidate
            for candidate in usable:
                if "$ref" not in candidate:
                    return candidate
        for candidate in usable:
            if candidate.get("type") != "null":
                return candidate
        return usable[0]

    def _kind(self, schema: dict[str, Any], depth: int) -> str:
        kind = schema.get("type")
        if isinstance(kind, list):
            if depth >= SHALLOW and "null" in kind:
                return "null"
            return next((str(k) for k in kind if k != "null"), "null")
        if isinstance(kind, str):
            return kind
        if "properties" in schema or "additionalProperties" in schema or "required" in schema:
            return "object"
        if "items" in schema or "prefixItems" in schema:
            return "array"
        if "minimum" in schema or "maximum" in schema or "multipleOf" in schema:
            return "number"
        return "string"

    def _object(self, schema: dict[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = [r for r in schema.get("required") or () if isinstance(r, str)]
        instance: dict[str, Any] = {}
        for key, sub in properties.items():
            if key in required or depth < SHALLOW:
                instance[key] = self.value(sub, depth + 1, key)
        extra = schema.get("additionalProperties", True)
        for key in required:
            if key not in instance:
                instance[key] = self.value(extra if isinstance(extra, dict) else {}, depth + 1, key)
        wanted = _count(schema, "minProperties") or 0
        if not properties and isinstance(extra, dict) and depth < SHALLOW:
            wanted = max(wanted, 1)
        while len(instance) < wanted and extra is not False:
            key = f"key{len(instance) + 1}"
            instance[key] = self.value(extra if isinstance(extra, dict) else {}, depth + 1, key)
        return instance

    def _array(self, schema: dict[str, Any], depth: int, name: str) -> list[Any]:
        prefix = schema.get("prefixItems")
        items = schema.get("items", {})
        if isinstance(items, list):  # draft 4 tuples
            prefix, items = items, schema.get("additionalItems", {})
        prefix = prefix if isinstance(prefix, list) else []
        low, high = (_count(schema, "minItems") or 0), _count(schema, "maxItems")
        count = max(low, len(prefix) if prefix else (0 if depth >= SHALLOW else 1))
        if items is False:
            count = min(count, len(prefix))
        if high is not None:
            count = min(count, high)
        unique = schema.get("uniqueItems") is True
        values: list[Any] = []
        for index in range(count):
            sub = prefix[index] if index < len(prefix) else items
            for _ in range(UNIQUE_TRIES if unique else 1):
                self.taken = values if unique else []
                candidate = self.value(sub, depth + 1, name)
                if candidate not in values:
                    break
            self.taken = []
            values.append(candidate)
        return values

    def _integer(self, schema: dict[str, Any]) -> int:
        low, high, exclusive_low, exclusive_high = _bounds(schema)
        low_int = math.floor(low) + 1 if exclusive_low else math.ceil(low)
        high_int = math.ceil(high) - 1 if exclusive_high else math.floor(high)
        step = schema.get("multipleOf")
        if isinstance(step, int) and not isinstance(step, bool) and step > 0:
            first = math.ceil(low_int / step)
            last = max(first, math.floor(high_int / step))
            return self.rng.randint(first, last) * step
        return self.rng.randint(low_int, max(low_int, high_int))

    def _number(self, schema: dict[str, Any]) -> float:
        low, high, _, _ = _bounds(schema)
        step = schema.get("multipleOf")
        if isinstance(step, int | float) and not isinstance(step, bool) and step > 0:
            first = math.ceil(low / step)
            return float(self.rng.randint(first, max(first, math.floor(high / step))) * step)
        value = round(self.rng.uniform(low, high), 2)
        if value.is_integer() and low < value + 0.25 < high:
            value += 0.25  # a fraction keeps a number apart from an integer branch of a oneOf
        if not low < value < high:
            value = (low + high) / 2
        return value

    def _string(self, schema: dict[str, Any], name: str) -> str:
        text = f"simulated {name.replace('_', ' ')}".strip() if name else "simulated"
        fmt = schema.get("format")
        if fmt == "uuid":
            text = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        elif isinstance(fmt, str) and fmt in FORMATS:
            text = FORMATS[fmt]
        if text in self.taken:  # another item of a uniqueItems array
            text = f"{text} {len(self.taken) + 1}"
        pattern = schema.get("pattern")
        if isinstance(pattern, str):
            text = _matching(pattern, text)
        low, high = (_count(schema, "minLength") or 0), _count(schema, "maxLength")
        if len(text) < low:
            text += "x" * (low - len(text))
        if high is not None and len(text) > high:
            text = text[:high]
        return text


def _bounds(schema: dict[str, Any]) -> tuple[float, float, bool, bool]:
    """Lower and upper bound and whether each is exclusive, with a default span where one is missing."""
    low, high = _number_or_none(schema.get("minimum")), _number_or_none(schema.get("maximum"))
    exclusive_low = exclusive_high = False
    flag_low, flag_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if flag_low is True:  # draft 4: a flag on minimum
        exclusive_low = low is not None
    elif (value := _number_or_none(flag_low)) is not None and (low is None or value >= low):
        low, exclusive_low = value, True
    if flag_high is True:
        exclusive_high = high is not None
    elif (value := _number_or_none(flag_high)) is not None and (high is None or value <= high):
        high, exclusive_high = value, True
    if low is None:
        low = 1.0 if high is None or high > 1 else high - DEFAULT_SPAN
    if high is None:
        high = low + DEFAULT_SPAN
    return low, high, exclusive_low, exclusive_high


def _count(schema: dict[str, Any], key: str) -> int | None:
    """A non-negative integer keyword (``minItems``, ``maxLength``...), None when absent or malformed."""
    value = schema.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _number_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _matching(pattern: str, preferred: str) -> str:
    """``preferred`` if it matches ``pattern``, else a string built from the pattern, else a stock candidate."""
    try:
        compiled = re.compile(pattern)
    except re.error:
        return preferred
    try:
        built = _PatternSample(pattern).sequence()
    except IndexError:
        built = preferred
    for candidate in (preferred, built, *PATTERN_CANDIDATES):
        if compiled.search(candidate):
            return candidate
    return preferred


class _PatternSample:
    """One string a simple regular expression matches: the first alternative, one of each
    repetition (``{n,m}``: n), the first member of a class. Checked by the caller."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.i = 0

    def sequence(self) -> str:
        parts: list[str] = []
        while self.i < len(self.pattern) and self.pattern[self.i] not in "|)":
            atom = self._atom()
            parts.append(atom * self._repeat())
        if self.i < len(self.pattern) and self.pattern[self.i] == "|":
            self._skip_alternatives()
        return "".join(parts)

    def _next(self) -> str:
        char = self.pattern[self.i]
        self.i += 1
        return char

    def _atom(self) -> str:
        char = self._next()
        if char in "^$":
            return ""
        if char == ".":
            return "a"
        if char == "\\":
            escaped = self._next()
            return PATTERN_ESCAPES.get(escaped, escaped)
        if char == "[":
            return self._class()
        if char == "(":
            lookaround = self.pattern.startswith(("?=", "?!", "?<=", "?<!"), self.i)
            if self.pattern.startswith("?", self.i):
                self.i = (
                    self.pattern.index(">", self.i) + 1
                    if self.pattern.startswith(("?P<", "?<"), self.i) and not lookaround
                    else self.i + 2
                )
            inner = self.sequence()
            self.i += 1  # the closing parenthesis
            return "" if lookaround else inner
        return char

    def _class(self) -> str:
        negated = self.pattern.startswith("^", self.i)
        self.i += negated
        members: list[str] = []
        while True:
            char = self._next()
            if char == "]" and members:
                break
            members.append(PATTERN_ESCAPES.get(self._next(), "-") if char == "\\" else char)
        if negated:
            return next(c for c in "a1-x_" if c not in members)
        return members[0]

    def _repeat(self) -> int:
        if self.i >= len(self.pattern) or self.pattern[self.i] not in "?*+{":
            return 1
        count = 1
        if self.pattern[self.i] == "{":
            end = self.pattern.index("}", self.i)
            low = self.pattern[self.i + 1 : end].split(",")[0].strip()
            count = int(low) if low.isdigit() and int(low) > 0 else 1
            self.i = end + 1
        else:
            self.i += 1
        if self.i < len(self.pattern) and self.pattern[self.i] in "?+":
            self.i += 1  # lazy or possessive
        return count

    def _skip_alternatives(self) -> None:
        depth = 0
        while self.i < len(self.pattern):
            char = self.pattern[self.i]
            if char == "\\":
                self.i += 1
            elif char == "(":
                depth += 1
            elif char == ")":
                if depth == 0:
                    return
                depth -= 1
            self.i += 1


def _merge(base: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """``allOf`` parts as one schema: properties and required lists combined, other keys kept first."""
    merged = {**part, **base}
    if isinstance(base.get("properties"), dict) or isinstance(part.get("properties"), dict):
        merged["properties"] = {**(part.get("properties") or {}), **(base.get("properties") or {})}
    if base.get("required") or part.get("required"):
        merged["required"] = list(dict.fromkeys([*(base.get("required") or ()), *(part.get("required") or ())]))
    return merged
