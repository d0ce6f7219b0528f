"""A mixed, deterministic workload for ``router simulate``: one request a line (JSONL).

    .venv/bin/python -m benchmarks.make_workload [--requests 2000] [--seed 7] [--out workload.jsonl]

What is in it (shares of the requests; the same seed always writes the same file):
- 35 % short chat (one question, a few dozen tokens) on ``standard`` or ``cheap-chat``;
- 20 % medium chat (a conversation of 3–9 turns, 500–3,000 tokens, half of it cached input);
- 10 % tool calls (two to four tools declared) on ``standard``;
- 15 % on ``auto``, the difficulty-aware route: everyday questions and competition-style
  maths and proofs, so the predictor sends some of them up;
- 8 % long context (a 10k–25k-token document to summarise: too long for an 8k local model);
- 2 % very long context (35k–140k tokens: the ``prompt_tokens > 30000`` rule, and windows);
- 10 % embeddings.
Four teams (``web``, ``support``, ``research``, ``data``), named by the ``team`` field; the
research team also sends ``x-team: research`` (the demo policy sends it to frontier). Each line
carries ``usage`` as an upstream would report it: the prompt, an answer length typical of the
request, and cached input on repeated conversations.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

WORDS = [
    "the",
    "order",
    "invoice",
    "customer",
    "shipping",
    "account",
    "refund",
    "delivery",
    "report",
    "quarter",
    "revenue",
    "team",
    "product",
    "feature",
    "release",
    "update",
    "service",
    "request",
    "error",
    "log",
    "server",
    "database",
    "query",
    "table",
    "user",
    "login",
    "password",
    "email",
    "address",
    "support",
    "ticket",
    "issue",
    "status",
    "meeting",
    "schedule",
    "budget",
    "forecast",
    "sales",
    "region",
    "market",
    "analysis",
    "summary",
    "document",
    "policy",
    "contract",
    "review",
    "draft",
]
QUESTIONS = (
    "How do I reset my password?",
    "What is the status of order 4471?",
    "Summarise this ticket in one sentence.",
    "Translate 'good morning' into French.",
    "Write a short friendly reply to a customer asking about delivery times.",
    "What are the opening hours of the support desk?",
    "Give me three subject lines for a newsletter about our spring sale.",
)
HARD = (
    "Let a, b, c be positive reals with a + b + c = 3. Prove that a/(b^2 + 1) + b/(c^2 + 1) + "
    "c/(a^2 + 1) >= 3/2, and determine when equality holds.",
    "Find the number of ordered triples of integers (x, y, z) with x^2 + y^2 + z^2 = 2xyz, and prove it.",
    "Prove that for every prime p > 3, p^2 - 1 is divisible by 24, then generalise to p^4 - 1.",
    "A sequence satisfies a(n+2) = 3a(n+1) - 2a(n) + n with a(0) = 1, a(1) = 4. Find a closed form and prove it.",
    "Show that the polynomial x^5 - 4x + 2 is irreducible over Q and that its Galois group is S5.",
)
TOOLS = ("get_weather", "search_orders", "create_ticket", "lookup_customer", "send_email")
TEAMS = ("web", "support", "research", "data")
TOKENS_PER_WORD = 1.3  # English prose in a BPE vocabulary, near enough for a usage figure


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def _tokens(text: str) -> int:
    return int(len(text.split()) * TOKENS_PER_WORD) + 4


def _request(body: dict[str, Any], team: str, prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    line: dict[str, Any] = {"body": body, "team": team}
    if team == "research":
        line["headers"] = {"x-team": "research"}
    line["usage"] = {"prompt_tokens": prompt, "completion_tokens": completion, "cached_tokens": cached}
    return line


def short_chat(rng: random.Random, team: str) -> dict[str, Any]:
    question = rng.choice(QUESTIONS)
    body = {"model": rng.choice(("standard", "cheap-chat")), "messages": [{"role": "user", "content": question}]}
    return _request(body, team, _tokens(question) + 8, rng.randint(20, 160))


def medium_chat(rng: random.Random, team: str) -> dict[str, Any]:
    messages: list[dict[str, str]] = [{"role": "system", "content": "You are a helpful support assistant."}]
    for turn in range(rng.randint(3, 9)):
        messages.append({"role": "user" if turn % 2 == 0 else "assistant", "content": _text(rng, rng.randint(60, 250))})
    if messages[-1]["role"] != "user":
        messages.append({"role": "user", "content": rng.choice(QUESTIONS)})
    prompt = sum(_tokens(m["content"]) + 4 for m in messages)
    body = {"model": "standard", "messages": messages, "max_tokens": 800}
    return _request(body, team, prompt, rng.randint(100, 600), cached=prompt // 2)


def tool_call(rng: random.Random, team: str) -> dict[str, Any]:
    names = rng.sample(TOOLS, rng.randint(2, 4))
    tools = [
        {
            "type": "function",
            "function": {
                "name": name,
                "description": f"{name.replace('_', ' ')} for the current user",
                "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
            },
        }
        for name in names
    ]
    question = rng.choice(QUESTIONS)
    body = {"model": "standard", "messages": [{"role": "user", "content": question}], "tools": tools}
    return _request(body, team, _tokens(question) + 60 * len(tools), rng.randint(15, 60))


def auto_chat(rng: random.Random, team: str) -> dict[str, Any]:
    question = rng.choice(HARD) if rng.random() < 0.35 else rng.choice(QUESTIONS)
    body = {"model": "auto", "messages": [{"role": "user", "content": question}]}
    hard = question in HARD
    return _request(body, team, _tokens(question) + 8, rng.randint(400, 1500) if hard else rng.randint(30, 200))


def long_context(rng: random.Random, team: str, low: int, high: int) -> dict[str, Any]:
    document = _text(rng, int(rng.randint(low, high) / TOKENS_PER_WORD))
    content = f"Summarise the key points of this document:\n\n{document}"
    body = {"model": "standard", "messages": [{"role": "user", "content": content}], "max_tokens": 1000}
    return _request(body, team, _tokens(content) + 8, rng.randint(300, 900))


def embedding(rng: random.Random, team: str) -> dict[str, Any]:
    texts = [_text(rng, rng.randint(20, 120)) for _ in range(rng.randint(1, 8))]
    line = _request({"model": "standard", "input": texts}, team, sum(_tokens(t) for t in texts), 0)
    line["usage"].pop("completion_tokens")
    return line


KINDS: tuple[tuple[float, Callable[[random.Random, str], dict[str, Any]]], ...] = (
    (0.35, short_chat),
    (0.20, medium_chat),
    (0.10, tool_call),
    (0.15, auto_chat),
    (0.08, lambda rng, team: long_context(rng, team, 10_000, 25_000)),
    (0.02, lambda rng, team: long_context(rng, team, 35_000, 140_000)),
    (0.10, embedding),
)


def workload(requests: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    weights, makers = zip(*KINDS, strict=True)
    return [rng.choices(makers, weights)[0](rng, rng.choice(TEAMS)) for _ in range(requests)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, help="file to write (default: stdout)")
    args = parser.parse_args(argv)
    lines = (json.dumps(line, separators=(",", ":")) + "\n" for line in workload(args.requests, args.seed))
    if args.out is None:
        sys.stdout.writelines(lines)
        return
    with args.out.open("w") as out:
        out.writelines(lines)


if __name__ == "__main__":
    main()
