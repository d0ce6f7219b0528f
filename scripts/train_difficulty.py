"""Train the difficulty predictor from the shared outcomes file and write router/difficulty/model.json.

    .venv/bin/python scripts/train_difficulty.py [--data PATH] [--out PATH]

Reads ``outcomes_train.csv`` (source, domain, prompt, weak_correct, strong_correct), featurises
every prompt with the predictor's own code (router.difficulty.features / .embedding), fits two
L2 logistic regressions — P(weak wrong and strong right), P(weak right and strong wrong) — on
the WordLlama mean embedding and the counts, and the same two targets with two small
gradient-boosted tree ensembles (scikit-learn HistGradientBoosting) on the counts alone, which
catch what a linear model cannot (interactions, thresholds); the score is the mean of the two
expected gains, calibrated on out-of-fold predictions (folds by MMLU subject; GSM8K, one domain,
by row). The trees ship as plain arrays, evaluated in pure Python at run time.
Writes weights, calibration, held-out metrics and the data's provenance; never a prompt.
Deterministic: the same file and packages give the same bytes.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import json
import sys
import zlib
from collections import Counter
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from router.difficulty import embedding, features  # noqa: E402
from router.difficulty.predictor import FORMAT, MODEL_FILE  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "routing" / "outcomes_train.csv"
FOLDS = 5
REGULARISATION_C = 0.1
SIGNIFICANT_DIGITS = 7
# Tree ensembles over the counts: small on purpose (200 trees of ≤ 8 leaves cost ≈ 0.1 ms in pure
# Python); chosen on the subject-split folds, not tuned further.
TREE_ITERATIONS = 100
TREE_LEAVES = 8
TREE_LEARNING_RATE = 0.05
TREE_MIN_LEAF = 40
TREE_L2 = 1.0
TREE_INPUTS = len(features.FEATURE_NAMES)  # the plain counts (the no_options copies add nothing to a tree)


@dataclass(frozen=True)
class Dataset:
    embeddings: np.ndarray  # (n, 256) mean WordLlama embedding of embedding_text(prompt), with the prior
    inputs: np.ndarray  # (n, len(MODEL_INPUT_NAMES))
    weak: np.ndarray
    strong: np.ndarray
    source: np.ndarray
    domain: np.ndarray

    @property
    def weak_worse(self) -> np.ndarray:
        return ((self.weak == 0) & (self.strong == 1)).astype(int)

    @property
    def weak_better(self) -> np.ndarray:
        return ((self.weak == 1) & (self.strong == 0)).astype(int)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def featurise(rows: list[dict[str, str]]) -> Dataset:
    root = embedding.wordllama_dir()
    tokenizer = embedding.Tokenizer(embedding.load_vocabulary(root))
    table = embedding.load_token_embeddings(root).astype(np.float32)
    prior = table.mean(axis=0, dtype=np.float64) * features.EMBED_PRIOR_TOKENS
    means = np.zeros((len(rows), table.shape[1]), dtype=np.float64)
    for i, row in enumerate(rows):
        ids = tokenizer.ids(features.embedding_text(row["prompt"]))
        total = table[ids].sum(axis=0, dtype=np.float64) if ids else 0.0
        means[i] = (total + prior) / (len(ids) + features.EMBED_PRIOR_TOKENS)
    return Dataset(
        embeddings=means,
        inputs=np.array([features.model_inputs(row["prompt"]) for row in rows], dtype=np.float64),
        weak=np.array([int(row["weak_correct"]) for row in rows]),
        strong=np.array([int(row["strong_correct"]) for row in rows]),
        source=np.array([row["source"] for row in rows]),
        domain=np.array([row["domain"] for row in rows]),
    )


def fold_token_table(embedding_weights: np.ndarray) -> tuple[list[str], list[float]]:
    """Per head, the token table dotted with that head's embedding weights (base64 float32), and its mean."""
    table = embedding.load_token_embeddings().astype(np.float64)
    folded = np.stack([table @ w for w in embedding_weights], axis=1)  # (vocabulary, heads)
    as_float32 = folded.astype("<f4")
    encoded = [base64.b64encode(as_float32[:, h].tobytes()).decode("ascii") for h in range(folded.shape[1])]
    return encoded, rounded(as_float32.astype(np.float64).mean(axis=0))


def fold_of(data: Dataset, folds: int = FOLDS) -> np.ndarray:
    """Fold per row: MMLU by subject (a stable hash of its name), GSM8K by row (it is one domain)."""
    fold = np.zeros(len(data.weak), dtype=int)
    subjects = sorted(set(data.domain[data.source == "mmlu"].tolist()))
    ranked = sorted(subjects, key=lambda s: zlib.crc32(s.encode()))
    for i, subject in enumerate(ranked):
        fold[(data.source == "mmlu") & (data.domain == subject)] = i % folds
    gsm = np.flatnonzero(data.source != "mmlu")
    order = np.random.RandomState(12).permutation(len(gsm))
    fold[gsm[order]] = np.arange(len(gsm)) % folds
    return fold


@dataclass(frozen=True)
class Heads:
    """Two logistic heads on raw (unscaled) features: columns = [embedding..., inputs...]."""

    weights: np.ndarray  # (2, d)
    bias: np.ndarray  # (2,)

    def gain(self, x: np.ndarray) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-(x @ self.weights.T + self.bias)))
        return p[:, 0] - p[:, 1]


def design(data: Dataset, rows: np.ndarray) -> np.ndarray:
    return np.hstack([data.embeddings[rows], data.inputs[rows]])


def fit_heads(data: Dataset, rows: np.ndarray, c: float = REGULARISATION_C) -> Heads:
    x = design(data, rows)
    scaler = StandardScaler().fit(x)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    weights, bias = [], []
    for y in (data.weak_worse[rows], data.weak_better[rows]):
        model = LogisticRegression(C=c, max_iter=5000, tol=1e-8).fit((x - scaler.mean_) / scale, y)
        w = model.coef_[0] / scale
        weights.append(w)
        bias.append(model.intercept_[0] - float(w @ scaler.mean_))
    return Heads(np.array(weights), np.array(bias))


def fit_trees(data: Dataset, rows: np.ndarray) -> list[HistGradientBoostingClassifier]:
    """Per head (weak_worse, weak_better) a boosted tree ensemble on the counts; one thread, so the same bytes."""
    x = data.inputs[rows][:, :TREE_INPUTS]
    models = []
    with threadpool_limits(limits=1):
        for y in (data.weak_worse[rows], data.weak_better[rows]):
            model = HistGradientBoostingClassifier(
                max_iter=TREE_ITERATIONS,
                learning_rate=TREE_LEARNING_RATE,
                max_leaf_nodes=TREE_LEAVES,
                min_samples_leaf=TREE_MIN_LEAF,
                l2_regularization=TREE_L2,
                early_stopping=False,
                random_state=0,
            )
            models.append(model.fit(x, y))
    return models


def trees_gain(models: list[HistGradientBoostingClassifier], data: Dataset, rows: np.ndarray) -> np.ndarray:
    x = data.inputs[rows][:, :TREE_INPUTS]
    with threadpool_limits(limits=1):
        p = [model.predict_proba(x)[:, 1] for model in models]
    return np.asarray(p[0] - p[1])


def out_of_fold_gain(data: Dataset, fold: np.ndarray, c: float = REGULARISATION_C) -> np.ndarray:
    """Held-out score of every row: the mean of the linear heads' and the trees' expected gains."""
    gain = np.zeros(len(fold))
    for k in sorted(set(fold.tolist())):
        held_out = np.flatnonzero(fold == k)
        trained = np.flatnonzero(fold != k)
        heads = fit_heads(data, trained, c)
        trees = fit_trees(data, trained)
        gain[held_out] = (heads.gain(design(data, held_out)) + trees_gain(trees, data, held_out)) / 2
    return gain


def export_trees(model: HistGradientBoostingClassifier) -> dict[str, Any]:
    """One head's ensemble as arrays: per tree, parallel lists over its nodes (leaf: feature −1, value)."""
    trees = []
    for (predictor,) in model._predictors:
        nodes = predictor.nodes
        leaf = nodes["is_leaf"].astype(bool)
        trees.append(
            {
                "feature": [-1 if is_leaf else int(f) for f, is_leaf in zip(nodes["feature_idx"], leaf, strict=True)],
                # thresholds exactly (repr round-trips a float64): a rounded one could send a value the other way
                "threshold": [
                    0.0 if is_leaf else float(t) for t, is_leaf in zip(nodes["num_threshold"], leaf, strict=True)
                ],
                "left": [int(v) for v in nodes["left"]],
                "right": [int(v) for v in nodes["right"]],
                "value": [rounded([v])[0] if is_leaf else 0.0 for v, is_leaf in zip(nodes["value"], leaf, strict=True)],
            }
        )
    return {"baseline": rounded(model._baseline_prediction)[0], "trees": trees}


def routing_curve(score: np.ndarray, weak: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """Accuracy when the k highest-scored prompts go to the strong model, for k = 0..n."""
    order = np.argsort(-score, kind="stable")
    strong_taken = np.concatenate([[0], np.cumsum(strong[order])])
    weak_given_up = np.concatenate([[0], np.cumsum(weak[order])])
    return (strong_taken + weak.sum() - weak_given_up) / len(weak)


def routing_metrics(score: np.ndarray, weak: np.ndarray, strong: np.ndarray) -> dict[str, float]:
    """APGR and the share of strong calls needed to keep 95 % of the strong model's accuracy."""
    accuracy = routing_curve(score, weak, strong)
    weak_acc, strong_acc = float(weak.mean()), float(strong.mean())
    recovered = (accuracy - weak_acc) / (strong_acc - weak_acc)
    share = np.arange(len(accuracy)) / (len(accuracy) - 1)
    apgr = float(np.sum((recovered[1:] + recovered[:-1]) / 2) / (len(accuracy) - 1))
    keeps = np.flatnonzero(accuracy >= 0.95 * strong_acc)
    return {
        "apgr": apgr,
        "strong_share_for_95pct": float(share[keeps[0]]),
        "weak_accuracy": weak_acc,
        "strong_accuracy": strong_acc,
        "prompts": len(weak),
    }


def random_router_metrics(weak: np.ndarray, strong: np.ndarray) -> dict[str, float]:
    """Expected figures of a router that calls the strong model at random (accuracy linear in the share)."""
    weak_acc, strong_acc = float(weak.mean()), float(strong.mean())
    return {
        "apgr": 0.5,
        "strong_share_for_95pct": max(0.0, (0.95 * strong_acc - weak_acc) / (strong_acc - weak_acc)),
    }


def calibrate(gain: np.ndarray, weak_worse: np.ndarray) -> tuple[float, float]:
    model = LogisticRegression(C=1e6, max_iter=5000, tol=1e-10).fit(gain.reshape(-1, 1), weak_worse)
    return float(model.coef_[0][0]), float(model.intercept_[0])


def rounded(values: Any) -> Any:
    return [float(f"{v:.{SIGNIFICANT_DIGITS}g}") for v in np.asarray(values, dtype=np.float64).ravel()]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def held_out_report(data: Dataset, score: np.ndarray) -> dict[str, dict[str, float]]:
    report = {}
    for name, rows in (
        ("mmlu_held_out_subjects", data.source == "mmlu"),
        ("gsm8k_held_out_rows", data.source != "mmlu"),
    ):
        report[name] = routing_metrics(score[rows], data.weak[rows], data.strong[rows])
        report[name]["random_router_strong_share_for_95pct"] = random_router_metrics(
            data.weak[rows], data.strong[rows]
        )["strong_share_for_95pct"]
    return report


def train(data_path: Path) -> dict[str, Any]:
    rows = read_rows(data_path)
    data = featurise(rows)
    fold = fold_of(data)
    oof = out_of_fold_gain(data, fold)
    slope, intercept = calibrate(oof, data.weak_worse)
    heads = fit_heads(data, np.arange(len(rows)))
    trees = fit_trees(data, np.arange(len(rows)))
    dim = data.embeddings.shape[1]
    wordllama = embedding.wordllama_dir()
    token_heads, token_prior = fold_token_table(np.array([rounded(w[:dim]) for w in heads.weights]))
    return {
        "format": FORMAT,
        "predicts": "P(second-tier model answers worse than the frontier model), ranked by expected gain",
        "heads": ["weak_wrong_strong_right", "weak_right_strong_wrong"],
        "inputs": list(features.MODEL_INPUT_NAMES),
        "token_weights": {
            "encoding": "per head: base64 of little-endian float32, one per vocabulary id (embedding · weights)",
            "heads": token_heads,
            "prior": token_prior,
        },
        "input_weights": [rounded(w[dim:]) for w in heads.weights],
        "bias": rounded(heads.bias),
        "trees": {
            "inputs": list(features.FEATURE_NAMES),
            "rule": "per tree from node 0: go left when inputs[feature] <= threshold, else right, until feature == -1;"
            " head probability = sigmoid(baseline + sum of leaf values)",
            "heads": [export_trees(model) for model in trees],
        },
        "calibration": {"slope": rounded([slope])[0], "intercept": rounded([intercept])[0]},
        "training": {
            "model": "two L2 logistic regressions (scikit-learn lbfgs) on standardised features, folded into raw weights;"
            " two gradient-boosted tree ensembles (HistGradientBoostingClassifier) on the counts; score = mean of the"
            " two expected gains",
            "trees": {
                "iterations": TREE_ITERATIONS,
                "max_leaves": TREE_LEAVES,
                "learning_rate": TREE_LEARNING_RATE,
                "min_samples_leaf": TREE_MIN_LEAF,
                "l2_regularization": TREE_L2,
            },
            "regularisation_C": REGULARISATION_C,
            "folds": FOLDS,
            "embedding": {
                "package": "wordllama",
                "version": metadata.version("wordllama"),
                "weights_sha256": sha256(wordllama / embedding.WEIGHTS_FILE),
                "tokenizer_sha256": sha256(wordllama / embedding.TOKENIZER_FILE),
            },
            "scikit_learn": metadata.version("scikit-learn"),
            "numpy": metadata.version("numpy"),
        },
        "metrics_out_of_fold": {
            name: {k: rounded([v])[0] for k, v in values.items()} for name, values in held_out_report(data, oof).items()
        },
        "data": {
            "file": data_path.name,
            "sha256": sha256(data_path),
            "rows": len(rows),
            "rows_by_source": dict(sorted(Counter(r["source"] for r in rows).items())),
            "domains": len({r["domain"] for r in rows}),
            "origin": "lm-sys/RouteLLM evaluation data (commit 0b64fda), Apache-2.0; MMLU and GSM8K are MIT",
            "models": {"weak": "Mixtral-8x7B-Instruct-v0.1", "strong": "gpt-4-1106-preview"},
        },
    }


def write_model(model: dict[str, Any], out: Path) -> None:
    out.write_text(json.dumps(model, indent=1, sort_keys=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="outcomes CSV (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=MODEL_FILE, help="model file to write (default: %(default)s)")
    args = parser.parse_args(argv)
    model = train(args.data)
    write_model(model, args.out)
    print(f"wrote {args.out}: {json.dumps(model['metrics_out_of_fold'])}")


if __name__ == "__main__":
    main()
