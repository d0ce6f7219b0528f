"""The difficulty predictor core: scores, edge inputs, no network, lazy import, no shipped prompts."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from router.difficulty import embedding, load_predictor
from router.difficulty.predictor import MODEL_FILE, build_predictor, read_model

REPO = Path(__file__).resolve().parent.parent
# The shared outcomes file sits beside the checkout (../shared) in a workspace; a clone elsewhere
# on the same machine finds it at the workspace's absolute path, or through DIFFICULTY_DATA.
DATA_CANDIDATES = [
    REPO.parent / "shared" / "data" / "routing" / "outcomes_train.csv",
    Path("/work/shared/data/routing/outcomes_train.csv"),
]
TRAINING_DATA = Path(
    os.environ.get("DIFFICULTY_DATA") or next((p for p in DATA_CANDIDATES if p.is_file()), DATA_CANDIDATES[0])
)

COMPETITION_PROBLEM = (
    "Let $n \\ge 2$ be an integer. Prove that for all real numbers $x_1, \\dots, x_n$ with "
    "$x_1 + \\dots + x_n = 0$ we have $\\sum_{i=1}^{n} x_i x_{i+1} \\le 0$, and find all integers $n$ "
    "such that $n^2 + 1$ divides $n! + 1$."
)


def user(content: Any) -> list[dict[str, Any]]:
    return [{"role": "user", "content": content}]


def test_score_is_deterministic_across_calls_and_fresh_loads() -> None:
    messages = user("A train leaves at 3 pm at 60 km/h; a second leaves at 4 pm at 80 km/h. When does it catch up?")
    first = load_predictor().score(messages)
    assert load_predictor().score(messages) == first
    assert build_predictor().score(messages) == first


GSM8K_STYLE_PROBLEM = (
    "A bakery sells muffins for $3.25 each and cookies at 4 for $5. On Monday it sold 3/5 of its 240 muffins "
    "and twice as many cookies as muffins. If each muffin costs $1.10 to make and each cookie $0.45, how much "
    "profit did the bakery make on Monday?"
)
EVERYDAY_PROMPTS = ("say hello", "hi, how are you?", "thanks!", "What is the capital of France?")


@pytest.mark.parametrize("easy", EVERYDAY_PROMPTS)
def test_competition_math_problem_scores_above_everyday_prompts_by_a_wide_margin(easy: str) -> None:
    predictor = load_predictor()
    assert predictor.score(user(COMPETITION_PROBLEM)) > predictor.score(user(easy)) + 0.15


@pytest.mark.parametrize("easy", EVERYDAY_PROMPTS)
def test_multi_step_word_problem_scores_above_everyday_prompts(easy: str) -> None:
    predictor = load_predictor()
    assert predictor.score(user(GSM8K_STYLE_PROBLEM)) > predictor.score(user(easy)) + 0.02


@pytest.mark.parametrize(
    "messages",
    [
        [],
        user(""),
        [{"role": "system", "content": "You are terse."}, {"role": "assistant", "content": "Hi."}],
        user([{"type": "text", "text": "What is 17 * 23?"}, {"type": "image_url", "image_url": {"url": "x"}}]),
        user([]),
        user(None),
        user("hi"),
        user("12345 " * 40_000),
        user("∑∫π≤ " * 5_000 + "\x00\ud7ff"),
        [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "x"},
        ],
        [{"content": "no role"}, "not a dict"],  # type: ignore[list-item]
    ],
    ids=[
        "empty",
        "empty-user-turn",
        "no-user-turn",
        "content-parts",
        "empty-parts",
        "null-content",
        "one-token",
        "huge-numbers",
        "huge-symbols",
        "multi-turn",
        "junk-messages",
    ],
)
def test_score_is_a_probability_for_edge_inputs(messages: list[dict[str, Any]]) -> None:
    score = load_predictor().score(messages)
    assert isinstance(score, float)
    assert 0.0 <= score <= 1.0


def test_content_parts_score_like_the_same_plain_text() -> None:
    predictor = load_predictor()
    parts = user([{"type": "text", "text": "What is 17 * 23?"}, {"type": "image_url", "image_url": {"url": "x"}}])
    assert predictor.score(parts) == predictor.score(user("What is 17 * 23?"))


def test_loading_and_scoring_open_no_network_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network is blocked in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    predictor = build_predictor()
    score = predictor.score(user(COMPETITION_PROBLEM))
    assert 0.0 <= score <= 1.0
    assert attempts == []


def test_importing_router_and_its_app_loads_no_numpy_tokenizers_or_wordllama() -> None:
    code = (
        "import sys, router, router.app, router.difficulty\n"
        "heavy = sorted(m for m in ('numpy', 'tokenizers', 'wordllama', 'sklearn') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert result.stdout.strip() == ""


def test_shipped_model_contains_no_40_character_piece_of_any_training_prompt() -> None:
    assert TRAINING_DATA.is_file(), f"training data not found at {TRAINING_DATA}: set DIFFICULTY_DATA"
    shipped = "".join(p.read_text(encoding="utf-8") for p in MODEL_FILE.parent.glob("*.json"))
    window = 40
    shipped_pieces = {shipped[i : i + window] for i in range(len(shipped) - window + 1)}
    with TRAINING_DATA.open(newline="", encoding="utf-8") as f:
        prompts = [row["prompt"] for row in csv.DictReader(f)]
    assert len(prompts) > 10_000
    leaked = [
        prompt[i : i + window]
        for prompt in prompts
        for i in range(len(prompt) - window + 1)
        if prompt[i : i + window] in shipped_pieces
    ]
    assert leaked == []


def test_loading_and_scoring_import_neither_numpy_nor_tokenizers() -> None:
    code = (
        "import sys\n"
        "from router.difficulty import load_predictor\n"
        "load_predictor().score([{'role': 'user', 'content': 'What is 17 * 23?'}])\n"
        "print(','.join(sorted(m for m in ('numpy', 'tokenizers', 'wordllama', 'sklearn') if m in sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert result.stdout.strip() == ""


def test_score_reads_only_the_head_and_tail_of_a_long_turn() -> None:
    head, tail = "Solve: " + "x " * 1500, " y" * 1500 + " What is x + y?"
    middles = ("12 + 7 = 19; " * 2000, "the cat sat. " * 2000)
    assert len(middles[0]) == len(middles[1])
    predictor = load_predictor()
    assert predictor.score(user(head + middles[0] + tail)) == predictor.score(user(head + middles[1] + tail))


def test_tokenizer_gives_the_same_pieces_with_a_cold_and_a_warm_split_cache() -> None:
    tokenizer = embedding.Tokenizer(embedding.load_vocabulary())
    text = "Stylomastoid foramen: ∑∫π≤ naïve 12345, __init__() -> $4.50 each; paralysis."
    cold = tokenizer.ids(text)
    assert tokenizer.ids(text) == cold
    tokenizer.clear_cache()
    assert tokenizer.ids(text) == cold
    assert len(cold) > len(text.split())  # unknown words were split, unknown characters fell back to bytes


def test_common_words_are_one_vocabulary_piece_each() -> None:
    vocabulary = embedding.load_vocabulary()
    tokenizer = embedding.Tokenizer(vocabulary)
    text = "the cat sat on the mat"
    assert tokenizer.ids(text) == [vocabulary["▁" + word] for word in text.split()]


def test_a_model_trained_on_another_wordllama_tokenizer_is_refused(tmp_path: Path) -> None:
    model = read_model()
    model["training"]["embedding"]["tokenizer_sha256"] = "0" * 64
    path = tmp_path / "model.json"
    path.write_text(json.dumps(model), encoding="utf-8")
    with pytest.raises(embedding.EmbeddingFilesMissing, match="re-train"):
        build_predictor(path)
