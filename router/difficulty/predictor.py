"""The difficulty predictor: two logistic models over a conversation's last user turn, in pure Python.

    logit[h] = (sum(token_weight[h][id] for id in tokens) + 8 · token_prior[h]) / (len(tokens) + 8)
               + inputs · input_weight[h] + bias[h]
    tree[h]  = sigmoid(baseline[h] + sum of the leaf each boosted tree of head h sends the counts to)
    gain = (sigmoid(logit[weak_worse]) - sigmoid(logit[weak_better])
            + tree[weak_worse] - tree[weak_better]) / 2                # expected strong-minus-weak score
    difficulty = sigmoid(calibration_slope · gain + calibration_intercept)

Head 0 predicts P(weak wrong and strong right), head 1 P(weak right and strong wrong); their
difference, the expected quality gained by calling the strong model, ranks best on held-out
subjects; the calibration maps it back to a probability that the weak model answers worse.
``token_weight`` is WordLlama's token embedding (32,000 × 256, from the wheel) times the learnt
embedding weights, folded by the training script into one float per token and head (the mean of
the embeddings dotted with the weights equals the mean of the dotted tokens) and shipped in
``model.json``; so scoring is a tokenisation, two sums of looked-up floats and two short dot
products, plus 2 × 100 walks down trees of at most 8 leaves over the counts (the trees catch
thresholds and interactions a linear model misses; they raised held-out APGR). No numpy, no ``tokenizers``: at run time only the vocabulary is read from the
``wordllama`` wheel (checked against the hash the model was trained with).
"""

from __future__ import annotations

import base64
import json
import math
import sys
from array import array
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from router.difficulty import embedding, features

MODEL_FILE = Path(__file__).with_name("model.json")
FORMAT = "tier-router-difficulty/3"
HEADS = 2


class DifficultyModelError(RuntimeError):
    """The shipped model file is missing, malformed or does not match the feature code."""


def decode_floats(encoded: str) -> array[float]:
    """A base64 string of little-endian float32 values (how the training script ships the token table)."""
    values = array("f", base64.b64decode(encoded))
    if sys.byteorder != "little":
        values.byteswap()
    return values


class _Tree:
    """One regression tree as parallel node arrays (a leaf has feature −1); ``value`` walks it."""

    __slots__ = ("feature", "left", "right", "threshold", "value")

    def __init__(self, tree: Mapping[str, Sequence[Any]]):
        self.feature = [int(f) for f in tree["feature"]]
        self.threshold = [float(t) for t in tree["threshold"]]
        self.left = [int(i) for i in tree["left"]]
        self.right = [int(i) for i in tree["right"]]
        self.value = [float(v) for v in tree["value"]]
        if not len(self.feature) == len(self.threshold) == len(self.left) == len(self.right) == len(self.value):
            raise DifficultyModelError("difficulty model has a malformed tree")


def _ensemble_margin(baseline: float, trees: Sequence[_Tree], inputs: Sequence[float]) -> float:
    margin = baseline
    for tree in trees:
        feature, threshold, left, right = tree.feature, tree.threshold, tree.left, tree.right
        node = 0
        f = feature[0]
        while f >= 0:
            node = left[node] if inputs[f] <= threshold[node] else right[node]
            f = feature[node]
        margin += tree.value[node]
    return margin


class DifficultyPredictor:
    """Scores a conversation: the predicted probability that the second-tier model answers worse."""

    def __init__(self, model: Mapping[str, Any], tokenizer: embedding.Tokenizer):
        if model.get("format") != FORMAT:
            raise DifficultyModelError(f"difficulty model format {model.get('format')!r}, expected {FORMAT!r}")
        if tuple(model["inputs"]) != features.MODEL_INPUT_NAMES:
            raise DifficultyModelError("difficulty model was trained on other count features: re-train it")
        tokens = model["token_weights"]
        self._token_weights = [decode_floats(encoded) for encoded in tokens["heads"]]
        self._prior = [float(p) * features.EMBED_PRIOR_TOKENS for p in tokens["prior"]]
        self._input_weights = [[float(w) for w in head] for head in model["input_weights"]]
        self._bias = [float(b) for b in model["bias"]]
        if not (len(self._token_weights) == len(self._prior) == len(self._input_weights) == len(self._bias) == HEADS):
            raise DifficultyModelError(f"difficulty model must have {HEADS} heads")
        if any(len(w) != tokenizer.size for w in self._token_weights):
            raise DifficultyModelError("difficulty model does not match the installed wordllama vocabulary")
        trees = model["trees"]
        if tuple(trees["inputs"]) != features.FEATURE_NAMES:
            raise DifficultyModelError("difficulty model's trees read other count features: re-train it")
        self._trees = [(float(head["baseline"]), [_Tree(tree) for tree in head["trees"]]) for head in trees["heads"]]
        if len(self._trees) != HEADS:
            raise DifficultyModelError(f"difficulty model must have {HEADS} tree heads")
        self._tokenizer = tokenizer
        self._slope = float(model["calibration"]["slope"])
        self._intercept = float(model["calibration"]["intercept"])
        self.metrics: Mapping[str, Any] = model.get("metrics_out_of_fold", {})

    def score(self, messages: Sequence[Mapping[str, Any]]) -> float:
        """Difficulty in [0, 1] of the conversation ``messages`` (OpenAI chat message dicts)."""
        return self.score_text(features.last_user_text(messages))

    def score_text(self, text: str) -> float:
        inputs = features.model_inputs(text)
        ids = self._tokenizer.ids(features.embedding_text(text))
        tokens = len(ids) + features.EMBED_PRIOR_TOKENS
        p = [
            _sigmoid(
                bias + (sum(map(table.__getitem__, ids)) + prior) / tokens + sum(map(float.__mul__, inputs, weights))
            )
            for table, prior, weights, bias in zip(
                self._token_weights, self._prior, self._input_weights, self._bias, strict=True
            )
        ]
        t = [_sigmoid(_ensemble_margin(baseline, trees, inputs)) for baseline, trees in self._trees]
        gain = (p[0] - p[1] + t[0] - t[1]) / 2
        return _sigmoid(self._slope * gain + self._intercept)


def read_model(path: Path = MODEL_FILE) -> dict[str, Any]:
    try:
        model: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DifficultyModelError(f"cannot read the difficulty model {path}: {exc}") from exc
    return model


def build_predictor(path: Path = MODEL_FILE) -> DifficultyPredictor:
    model = read_model(path)
    expected = model.get("training", {}).get("embedding", {}).get("tokenizer_sha256")
    vocabulary = embedding.load_vocabulary(expected_sha256=expected)
    return DifficultyPredictor(model, embedding.Tokenizer(vocabulary))


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)
