"""Difficulty of a conversation for routing: P(the second-tier model answers worse than the frontier).

Public API (for the policy engine and the API layer)::

    predictor = load_predictor()          # cached; loads numpy, the tokenizer and the weights once
    difficulty = predictor.score(messages)  # float in [0, 1], deterministic, no I/O

Importing this package is cheap: numpy, tokenizers and the model load only in
``load_predictor`` (a policy without an escalating route never pays for them).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from router.difficulty.predictor import DifficultyPredictor

__all__ = ["DifficultyPredictor", "load_predictor"]


@functools.cache
def load_predictor() -> DifficultyPredictor:
    """The shipped predictor, built on first call (≈ 0.2 s) and shared afterwards; thread-safe to use."""
    from router.difficulty.predictor import build_predictor  # deferred: numpy and tokenizers are heavy

    return build_predictor()
