"""Prices, context windows and capabilities from litellm's bundled model map.

The JSON file ships inside litellm's wheel; it is read directly, never through
``import litellm`` (which costs ~9 s and ~200 MB).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson

from router.types import ModelKind

MODEL_MAP_FILE = "model_prices_and_context_window_backup.json"
PER_MILLION = 1_000_000


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    key: str
    input_per_million: float | None
    output_per_million: float | None
    cached_input_per_million: float | None
    context_window: int | None
    max_output_tokens: int | None
    capabilities: frozenset[str]
    kind: ModelKind


def litellm_package_dir() -> Path:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("litellm is not installed; it ships the model map and tokenizer files")
    return Path(next(iter(spec.submodule_search_locations)))


@lru_cache(maxsize=1)
def load_model_map() -> dict[str, dict[str, Any]]:
    model_map: dict[str, dict[str, Any]] = orjson.loads((litellm_package_dir() / MODEL_MAP_FILE).read_bytes())
    return model_map


def lookup(keys: list[str]) -> CatalogEntry | None:
    """The first of ``keys`` the model map knows, as a catalog entry."""
    model_map = load_model_map()
    for key in keys:
        raw = model_map.get(key)
        if isinstance(raw, dict) and key != "sample_spec":
            return _entry(key, raw)
    return None


def _per_million(value: object) -> float | None:
    return round(float(value) * PER_MILLION, 6) if isinstance(value, (int, float)) else None


def _entry(key: str, raw: dict[str, Any]) -> CatalogEntry:
    capabilities = {
        name
        for name, flag in (
            ("tools", "supports_function_calling"),
            ("vision", "supports_vision"),
            ("json_schema", "supports_response_schema"),
        )
        if raw.get(flag)
    }
    return CatalogEntry(
        key=key,
        input_per_million=_per_million(raw.get("input_cost_per_token")),
        output_per_million=_per_million(raw.get("output_cost_per_token")),
        cached_input_per_million=_per_million(raw.get("cache_read_input_token_cost")),
        context_window=raw.get("max_input_tokens") or raw.get("max_tokens"),
        max_output_tokens=raw.get("max_output_tokens"),
        capabilities=frozenset(capabilities),
        kind="embedding" if raw.get("mode") == "embedding" else "chat",
    )
