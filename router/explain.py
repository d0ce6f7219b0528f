"""The routing decision as JSON: what ``/v1/router/explain`` and ``router explain`` print."""

from __future__ import annotations

from typing import Any

from router.policy.engine import Decision
from router.policy.model import Model


def decision_json(decision: Decision) -> dict[str, Any]:
    """The decision; ``difficulty`` only for a request on a route that escalates by it."""
    difficulty = {} if decision.difficulty is None else {"difficulty": round(decision.difficulty, 4)}
    return {
        "object": "router.decision",
        "requested": decision.requested,
        "route": decision.route,
        "tier": decision.tier,
        **difficulty,
        "reasons": list(decision.reasons),
        "prompt_tokens": decision.prompt_tokens,
        "expected_output_tokens": decision.expected_output_tokens,
        "candidates": [
            {"rank": rank, **_model_json(c.model), "estimated_cost_usd": round(c.estimated_cost_usd, 10)}
            for rank, c in enumerate(decision.candidates, start=1)
        ],
        "excluded": [{"model": e.model, "kind": e.kind, "reason": e.reason} for e in decision.excluded],
    }


def _model_json(model: Model) -> dict[str, Any]:
    return {
        "model": model.name,
        "provider": model.provider,
        "tier": model.tier,
        "input_usd_per_1m": model.price.input,
        "output_usd_per_1m": model.price.output,
        "context_window": model.context_window,
    }
