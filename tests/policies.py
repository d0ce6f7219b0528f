"""The one policy builder for tests: a policy as Python data, written out as YAML.

A test names only what it cares about; everything else takes the defaults below::

    policy(
        providers={"up": provider(upstream.base_url)},
        models={"solo": model("up", price=(1, 2))},
        keys=[key(SECRET, "web-app", team="web", budget={"usd": 1, "per": "day"})],
        retries=2,
    )

Each tier a model uses gets a route of the same name; ``defaults`` are ``route: standard,
retries: 0`` plus any keyword argument not naming a section.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from router.auth import digest_of

TIER_ORDER = ("frontier", "standard", "small")
UPSTREAM_KEY = "sk-upstream-secret-1"


def provider(
    base_url: str | None = None, *, type: str = "openai", api_key: str | None = UPSTREAM_KEY, **extra: Any
) -> dict[str, Any]:
    """A provider entry; ``api_key=None`` leaves the key out (a local server needs none)."""
    entry: dict[str, Any] = {"type": type}
    if base_url is not None:
        entry["base_url"] = base_url
    if api_key is not None:
        entry["api_key"] = api_key
    return {**entry, **extra}


def model(
    provider_name: str,
    upstream: str | None = "gpt-4o-mini",
    tier: str = "standard",
    *,
    price: tuple[float, ...] | None = (1.0, 2.0),
    context_window: int | None = 128000,
    **extra: Any,
) -> dict[str, Any]:
    """A model entry; ``price`` is (input, output[, cached_input]) USD per million tokens."""
    entry: dict[str, Any] = {"provider": provider_name, "tier": tier}
    if upstream is not None:
        entry["upstream"] = upstream
    if price is not None:
        entry["price"] = dict(zip(("input", "output", "cached_input"), price, strict=False))
    if context_window is not None:
        entry["context_window"] = context_window
    return {**entry, **extra}


def key(secret: str, name: str, team: str, **extra: Any) -> dict[str, Any]:
    """A client key entry, stored as its digest like ``router keys`` prints it."""
    return {"hash": f"sha256:{digest_of(secret)}", "name": name, "team": team, **extra}


def policy(
    *,
    providers: Mapping[str, Mapping[str, Any]],
    models: Mapping[str, Mapping[str, Any]],
    tiers: Iterable[str] | None = None,
    routes: Mapping[str, Mapping[str, Any]] | None = None,
    keys: Iterable[Mapping[str, Any]] = (),
    teams: Mapping[str, Any] | None = None,
    **defaults: Any,
) -> str:
    """The YAML text of a version-1 policy."""
    used = {m["tier"] for m in models.values()}
    tier_list = (
        list(tiers) if tiers is not None else [t for t in TIER_ORDER if t in used] + sorted(used - set(TIER_ORDER))
    )
    document: dict[str, Any] = {
        "version": 1,
        "tiers": tier_list,
        "providers": {name: dict(entry) for name, entry in providers.items()},
        "models": {name: dict(entry) for name, entry in models.items()},
        "routes": dict(routes) if routes is not None else {t: {"tier": t} for t in tier_list if t in used},
    }
    if keys:
        document["keys"] = [dict(entry) for entry in keys]
    if teams:
        document["teams"] = dict(teams)
    document["defaults"] = {"route": "standard", "retries": 0, **defaults}
    return yaml.safe_dump(document, sort_keys=False)
