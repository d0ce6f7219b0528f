"""Difficulty of a conversation for routing: P(the second-tier model answers worse than the frontier).

Public API (for the policy engine and the API layer)::

    predictor = load_predictor()          # cached; reads the vocabulary and the weights once
    difficulty = predictor.score(messages)  # float in [0, 1], deterministic, no I/O

Importing this package is cheap: the vocabulary and the model load only in ``load_predictor``
(a policy without an escalating route never pays for them). Scoring is pure Python (no numpy,
no ``tokenizers``): ≈ 7 MiB RSS once loaded.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from router.difficulty.predictor import DifficultyPredictor

__all__ = ["DifficultyPredictor", "load_predictor"]


@functools.cache
def load_predictor() -> DifficultyPredictor:
    """The shipped predictor, built on first call (≈ 0.1 s) and shared afterwards; thread-safe to use."""
    from router.difficulty.predictor import build_predictor  # deferred: the vocabulary costs a few MiB

    return build_predictor()
