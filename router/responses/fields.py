"""Typed reads of a JSON body's fields, each failure a 400 naming the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from router.errors import InvalidRequest


def object_field(value: Any, path: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidRequest(f"'{path}' must be an object.", param=path)
    return value


def string_field(item: Mapping[str, Any], name: str, path: str) -> str:
    value = item.get(name)
    if not isinstance(value, str):
        raise InvalidRequest(f"'{path}.{name}' must be a string.", param=f"{path}.{name}")
    return value
