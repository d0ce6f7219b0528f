"""A small valid instance of a JSON schema, for the simulated provider's structured output."""

from __future__ import annotations

from typing import Any

MAX_DEPTH = 8


def example_for(schema: Any, root: Any = None, depth: int = 0) -> Any:
    root = schema if root is None else root
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return None
    if "$ref" in schema:
        return example_for(_resolve(schema["$ref"], root), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return example_for(schema[key][0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        return {name: example_for(sub, root, depth + 1) for name, sub in schema.get("properties", {}).items()}
    if kind == "array":
        count = max(int(schema.get("minItems", 1)), 1)
        return [example_for(schema.get("items", {}), root, depth + 1) for _ in range(count)]
    scalars: dict[Any, Any] = {"string": "simulated", "integer": 1, "number": 1.5, "boolean": True, "null": None}
    return scalars.get(kind, "simulated")


def _resolve(ref: str, root: Any) -> Any:
    node = root
    for part in ref.removeprefix("#/").split("/"):
        if not isinstance(node, dict):
            return {}
        node = node.get(part, {})
    return node
