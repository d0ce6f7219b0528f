"""The difficulty predictor: two logistic models over a conversation's last user turn.

    logit[h] = (sum(token_weight[id, h] for id in tokens) + 8 · mean_token_weight[h]) / (len(tokens) + 8)
               + inputs · input_weight[h] + bias[h]
    gain = sigmoid(logit[weak_worse]) - sigmoid(logit[weak_better])     # expected strong-minus-weak score
    difficulty = sigmoid(calibration_slope · gain + calibration_intercept)

Head 0 predicts P(weak wrong and strong right), head 1 P(weak right and strong wrong); their
difference, the expected quality gained by calling the strong model, ranks best on held-out
subjects; the calibration maps it back to a probability that the weak model answers worse.
``token_weight`` is WordLlama's token embedding (32,000 × 256, from the wheel) times the learnt
embedding weights, folded once at load into two floats per token: the mean of the embeddings
dotted with the weights equals the mean of the dotted tokens, so scoring is a tokenisation, a
gather and a mean. The model file (``model.json``, written by
``scripts/train_difficulty.py``) holds the weights, the calibration and the training metrics.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from router.difficulty import embedding, features

MODEL_FILE = Path(__file__).with_name("model.json")
FORMAT = "tier-router-difficulty/1"


class DifficultyModelError(RuntimeError):
    """The shipped model file is missing, malformed or does not match the feature code."""


class DifficultyPredictor:
    """Scores a conversation: the predicted probability that the second-tier model answers worse."""

    def __init__(self, model: Mapping[str, Any], tokenizer: Tokenizer, token_embeddings: npt.NDArray[np.float16]):
        if model.get("format") != FORMAT:
            raise DifficultyModelError(f"difficulty model format {model.get('format')!r}, expected {FORMAT!r}")
        if tuple(model["inputs"]) != features.MODEL_INPUT_NAMES:
            raise DifficultyModelError("difficulty model was trained on other count features: re-train it")
        embedding_weights = np.asarray(model["embedding_weights"], dtype=np.float32).T
        if token_embeddings.shape[1] != embedding_weights.shape[0]:
            raise DifficultyModelError("difficulty model does not match the installed wordllama embedding")
        self._tokenizer = tokenizer
        self._token_weight = _project(token_embeddings, embedding_weights)
        self._prior = self._token_weight.mean(axis=0, dtype=np.float64) * features.EMBED_PRIOR_TOKENS
        self._input_weights = np.asarray(model["input_weights"], dtype=np.float64).T
        self._bias = np.asarray(model["bias"], dtype=np.float64)
        self._slope = float(model["calibration"]["slope"])
        self._intercept = float(model["calibration"]["intercept"])
        self.metrics: Mapping[str, Any] = model.get("metrics", {})

    def score(self, messages: Sequence[Mapping[str, Any]]) -> float:
        """Difficulty in [0, 1] of the conversation ``messages`` (OpenAI chat message dicts)."""
        return self.score_text(features.last_user_text(messages))

    def score_text(self, text: str) -> float:
        inputs = np.asarray(features.model_inputs(text), dtype=np.float64)
        logits = self._bias + inputs @ self._input_weights + self._embedding_term(features.embedding_text(text))
        gain = _sigmoid(float(logits[0])) - _sigmoid(float(logits[1]))
        return _sigmoid(self._slope * gain + self._intercept)

    def _embedding_term(self, text: str) -> npt.NDArray[np.float64]:
        ids = embedding.token_ids(self._tokenizer, text)
        total: npt.NDArray[np.float64] = self._token_weight[ids].sum(axis=0, dtype=np.float64) + self._prior
        return total / (len(ids) + features.EMBED_PRIOR_TOKENS)


def read_model(path: Path = MODEL_FILE) -> dict[str, Any]:
    try:
        model: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DifficultyModelError(f"cannot read the difficulty model {path}: {exc}") from exc
    return model


def build_predictor(path: Path = MODEL_FILE) -> DifficultyPredictor:
    root = embedding.wordllama_dir()
    return DifficultyPredictor(read_model(path), embedding.load_tokenizer(root), embedding.load_token_embeddings(root))


def _project(token_embeddings: npt.NDArray[np.float16], weights: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Per token, its embedding dotted with each column of ``weights`` (in blocks, to bound the peak)."""
    out = np.empty((token_embeddings.shape[0], weights.shape[1]), dtype=np.float32)
    block = 4096
    for start in range(0, token_embeddings.shape[0], block):
        out[start : start + block] = token_embeddings[start : start + block].astype(np.float32) @ weights
    return out


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)
