"""Cost of a request: usage × the answering model's price, and savings against the baseline."""

from __future__ import annotations

from router.policy.model import Model, Policy, Price
from router.providers.base import Usage


def cost_usd(model: Model, usage: Usage, price: Price | None = None) -> float:
    return (price or model.price).cost_usd(usage.input_tokens, usage.output_tokens, usage.cached_tokens)


def savings_usd(policy: Policy, model: Model, actual_cost_usd: float, usage: Usage) -> float:
    """What the same usage would have cost on ``defaults.baseline_model``, minus the actual.
    Only requests of the baseline's kind count (an embedding is not priced as chat)."""
    baseline_name = policy.defaults.baseline_model
    baseline = policy.models.get(baseline_name) if baseline_name else None
    if baseline is None or baseline.kind != model.kind:
        return 0.0
    return cost_usd(baseline, usage) - actual_cost_usd
