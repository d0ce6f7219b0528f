"""What the difficulty model reads from a conversation: the text it embeds and hand-made counts.

Pure functions over strings (no numpy here); the same code serves the training script and the
predictor, so what is trained is what runs. Work is bounded: the counts read at most
``MAX_COUNT_CHARS`` characters, the embedding at most ``EMBED_HEAD_CHARS + EMBED_TAIL_CHARS``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

MAX_COUNT_CHARS = 8000
EMBED_HEAD_CHARS = 1200
EMBED_TAIL_CHARS = 400
# The mean embedding is taken over the tokens plus this many pseudo-tokens at the average token
# embedding, so a one- or two-token prompt ("hi") is not scored on one token's odd vector.
EMBED_PRIOR_TOKENS = 8

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_WORD = re.compile(r"\w+")
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
_OPTION_LINE = re.compile(r"^\s*\(?[A-Ha-h][.)]\s", re.MULTILINE)
_MATH_SYMBOL = re.compile(r"[=+*/^<>×÷√∑∫π≤≥≠]|\\(?:frac|sqrt|sum|int|cdot|le|ge|pi)\b|\b[a-z]\s*\^\s*\d")
_CODE = re.compile(r"```|\bdef |\bclass |\breturn\b|;\s*$|[{}]|\bfunction\b|\bimport\b", re.MULTILINE)
_FRACTION_OR_DECIMAL = re.compile(r"\d+/\d+|\d+\.\d+")
_PERCENT = re.compile(r"%|\bpercent", re.IGNORECASE)
_MONEY = re.compile(r"[$€£]|\bdollars?\b|\bcents?\b", re.IGNORECASE)
_TIME_UNIT = re.compile(r"\b(?:hours?|minutes?|seconds?|days?|weeks?|months?|years?)\b", re.IGNORECASE)
_STEP_CUE = re.compile(
    r"\b(?:each|per|every|total|remaining|left|twice|half|thrice|times|more than|less than|fewer|"
    r"then|after|before|altogether|respectively|average|ratio|rate|profit|discount|increase|decrease|"
    r"if|until|instead|rest|difference|combined|together|double|triple|quarter|third)\b",
    re.IGNORECASE,
)
_PROOF_CUE = re.compile(
    r"\b(?:prove|proof|show that|derive|find all|integer|integers|prime|polynomial|probability|"
    r"real numbers|sequence|triangle|modulo|remainder|maximum|minimum|how many ways)\b",
    re.IGNORECASE,
)

FEATURE_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_words",
    "log_numbers",
    "log_distinct_numbers",
    "log_fractions_decimals",
    "log_percents",
    "log_money",
    "log_time_units",
    "log_sentences",
    "log_questions",
    "log_math_symbols",
    "log_code_cues",
    "log_step_cues",
    "log_proof_cues",
    "has_options",
    "digit_share",
    "longest_number",
    "numbers_per_sentence",
)


def last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """Text of the last user message ('' when there is none); content parts lists are joined."""
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"] for part in content if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""


def embedding_text(text: str) -> str:
    """The bounded slice of ``text`` that is embedded: its head and its tail (where the question is)."""
    if len(text) <= EMBED_HEAD_CHARS + EMBED_TAIL_CHARS:
        return text
    return text[:EMBED_HEAD_CHARS] + " " + text[-EMBED_TAIL_CHARS:]


def counts(text: str) -> list[float]:
    """The hand-made features of one prompt, in ``FEATURE_NAMES`` order."""
    text = text[:MAX_COUNT_CHARS]
    numbers = _NUMBER.findall(text)
    sentences = len(_SENTENCE_END.findall(text)) + 1
    values = [
        len(text),
        len(_WORD.findall(text)),
        len(numbers),
        len(set(numbers)),
        len(_FRACTION_OR_DECIMAL.findall(text)),
        len(_PERCENT.findall(text)),
        len(_MONEY.findall(text)),
        len(_TIME_UNIT.findall(text)),
        sentences,
        text.count("?"),
        len(_MATH_SYMBOL.findall(text)),
        len(_CODE.findall(text)),
        len(_STEP_CUE.findall(text)),
        len(_PROOF_CUE.findall(text)),
    ]
    digits = sum(len(n) for n in numbers)
    return [
        *(math.log1p(v) for v in values),
        1.0 if len(_OPTION_LINE.findall(text)) >= 2 else 0.0,
        digits / max(len(text), 1),
        min(max((len(n) for n in numbers), default=0), 12) / 12,
        min(len(numbers) / sentences, 10.0) / 10,
    ]


MODEL_INPUT_NAMES: tuple[str, ...] = FEATURE_NAMES + tuple(f"no_options*{name}" for name in FEATURE_NAMES)
_HAS_OPTIONS = FEATURE_NAMES.index("has_options")


def model_inputs(text: str) -> list[float]:
    """``counts`` followed by the same counts for prompts without answer options (else zeros).

    Multiple-choice questions and open problems (word problems, tasks) get hard for different
    reasons; the second copy lets the linear model weigh the counts differently for the latter.
    """
    values = counts(text)
    open_problem = 1.0 - values[_HAS_OPTIONS]
    return values + [v * open_problem for v in values]
