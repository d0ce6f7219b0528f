"""What the difficulty model reads from a conversation: the text it embeds and hand-made counts.

Pure functions over strings (no numpy here); the same code serves the training script and the
predictor, so what is trained is what runs. Work is bounded whatever the input: the counts read
at most ``COUNT_HEAD_CHARS + COUNT_TAIL_CHARS`` characters (the length itself is the whole
turn's), the embedding at most ``EMBED_HEAD_CHARS + EMBED_TAIL_CHARS``. The counts cost a few
C-level passes (two ``findall``, one ``Counter``, ``str.count``), not one regex per feature.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

COUNT_HEAD_CHARS = 900
COUNT_TAIL_CHARS = 300
EMBED_HEAD_CHARS = 800
EMBED_TAIL_CHARS = 300
# The mean embedding is taken over the tokens plus this many pseudo-tokens at the average token
# embedding, so a one- or two-token prompt ("hi") is not scored on one token's odd vector.
EMBED_PRIOR_TOKENS = 8

_NUMBER = re.compile(r"[0-9]+(?:[.,][0-9]+)*")
_WORD = re.compile(r"[a-z]+")
_OPTION_MARKS = tuple(f"\n{mark}" for letter in "ABCDE" for mark in (f"{letter}.", f"{letter})", f"({letter})"))


def _words(spaced: str) -> frozenset[str]:
    return frozenset(spaced.split())


_MATH_CHARS = ("=", "+", "*", "/", "^", "<", ">", "×", "÷", "√", "∑", "∫", "π", "≤", "≥", "≠", "\\", "_")
_MONEY_CHARS = ("$", "€", "£")
_CODE_MARKS = ("```", "{", "}", ";\n", "()", "->", "==")

_CODE_WORDS = _words("def class return import function const var print elif lambda")
_MONEY_WORDS = _words("dollar dollars cent cents price cost costs paid pay pays sells sold buy buys bought")
_UNIT_WORDS = _words(
    "hour hours minute minutes second seconds day days week weeks month months year years mile miles km "
    "meter meters metres feet foot inch inches pound pounds kg gram grams liter liters litre gallon gallons "
    "ounce ounces mph cups cup pieces dozen"
)
_STEP_WORDS = _words(
    "each per every total remaining left twice half thrice times more less fewer then after before "
    "altogether respectively average ratio rate profit discount increase decrease if until instead rest "
    "difference combined together double triple quarter third than"
)
_OPERATION_WORDS = _words(
    "add adds added sum plus subtract minus multiply multiplied product divide divided split share shared "
    "spend spends spent earn earns earned save saves saved gives gave give lose loses lost buys"
)
_NUMBER_WORDS = _words(
    "one two three four five six seven eight nine ten eleven twelve fifteen twenty thirty forty fifty "
    "hundred thousand million"
)
_PROOF_WORDS = _words(
    "prove proof derive integer integers prime primes polynomial probability real sequence triangle modulo "
    "remainder maximum minimum ways divides divisible theorem function functions equation solutions"
)
_QUESTION_WORDS = _words("how what which why when where who whom whose")
_TASK_WORDS = _words(
    "find compute calculate solve determine evaluate explain write implement show estimate simplify "
    "answer choose select"
)

FEATURE_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_words",
    "log_numbers",
    "log_distinct_numbers",
    "log_number_words",
    "log_fractions_decimals",
    "log_percents",
    "log_money",
    "log_units",
    "log_sentences",
    "log_questions",
    "log_question_words",
    "log_task_words",
    "log_math_symbols",
    "log_code_cues",
    "log_step_cues",
    "log_operation_words",
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


def _window(text: str, head: int, tail: int) -> str:
    if len(text) <= head + tail:
        return text
    return text[:head] + "\n" + text[-tail:]


def embedding_text(text: str) -> str:
    """The bounded slice of ``text`` that is embedded: its head and its tail (where the question is)."""
    return _window(text, EMBED_HEAD_CHARS, EMBED_TAIL_CHARS)


def counts(text: str) -> list[float]:
    """The hand-made features of one prompt, in ``FEATURE_NAMES`` order."""
    window = _window(text, COUNT_HEAD_CHARS, COUNT_TAIL_CHARS)
    lower = window.lower()
    numbers = _NUMBER.findall(window)
    joined = "".join(numbers)
    words = Counter(_WORD.findall(lower))
    n_words = sum(words.values())

    def in_set(vocabulary: frozenset[str]) -> int:
        return sum(words.get(w, 0) for w in vocabulary)

    sentences = window.count(". ") + window.count(".\n") + window.count("? ") + window.count("! ") + 1
    questions = window.count("?")
    task_words = in_set(_TASK_WORDS)
    question_words = in_set(_QUESTION_WORDS)
    math_symbols = sum(window.count(c) for c in _MATH_CHARS)
    values = [
        len(text),
        n_words,
        len(numbers),
        len(set(numbers)),
        in_set(_NUMBER_WORDS),
        joined.count(".") + window.count("/"),
        window.count("%") + words["percent"],
        sum(window.count(c) for c in _MONEY_CHARS) + in_set(_MONEY_WORDS),
        in_set(_UNIT_WORDS),
        sentences,
        questions,
        question_words,
        task_words,
        math_symbols,
        sum(window.count(c) for c in _CODE_MARKS) + in_set(_CODE_WORDS),
        in_set(_STEP_WORDS),
        in_set(_OPERATION_WORDS),
        in_set(_PROOF_WORDS) + lower.count("show that") + lower.count("find all") + lower.count("how many ways"),
    ]
    digits = len(joined) - joined.count(".") - joined.count(",")
    return [
        *(math.log1p(v) for v in values),
        1.0 if sum(mark in window for mark in _OPTION_MARKS) >= 2 else 0.0,
        digits / max(len(window), 1),
        min(max(map(len, numbers), default=0), 12) / 12,
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
