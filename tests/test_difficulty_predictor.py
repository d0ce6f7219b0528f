"""The difficulty predictor core: scores, edge inputs, no network, lazy import, no shipped prompts."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from router.difficulty import load_predictor
from router.difficulty.predictor import MODEL_FILE, build_predictor

REPO = Path(__file__).resolve().parent.parent
TRAINING_DATA = Path(
    os.environ.get("DIFFICULTY_DATA", REPO.parent / "shared" / "data" / "routing" / "outcomes_train.csv")
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


def test_competition_math_problem_scores_above_say_hello() -> None:
    predictor = load_predictor()
    assert predictor.score(user(COMPETITION_PROBLEM)) > predictor.score(user("say hello"))


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
