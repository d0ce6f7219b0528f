"""The judge: how a pair of answers is put to a judge model, and how its reply is read.

Why it is asked this way (each choice answers a documented weakness of LLM judges):

- **Pairwise, not a score.** Judges agree with people far better when asked "which of these
  two is better" than when asked to grade one answer on a scale (MT-Bench, Zheng et al. 2023):
  a scale drifts between calls, a comparison does not need one.
- **Blind.** The judge sees "Answer A" and "Answer B", never which model wrote them, which
  one is cheaper, or which is the reference: a judge told a model's name favours the one it
  believes is stronger.
- **Both orders.** Position bias is the best-documented flaw: judges prefer whichever answer
  comes first (or second, depending on the model). Each pair is judged twice, the cheaper
  answer as A and then as B; a verdict counts only when both orders agree, and a pair whose
  two judgements disagree counts as ``same`` (the judge could not tell them apart once its
  bias is removed).
- **Ties allowed.** Forcing a winner turns equally good answers into noise; ``tie`` is the
  honest answer for most pairs on easy traffic, and is what "the cheaper tier holds" means.
- **Length and style are not quality.** Judges favour longer answers (verbosity bias); the
  prompt says a shorter answer that does the job is as good as a longer one.
- **One JSON object.** ``{"winner": "A" | "B" | "tie", "reason": "<one line>"}`` and nothing
  else, asked for with the judge's structured output (``response_format`` json_schema) when
  the policy lists ``json_schema`` among its capabilities; anything else is an ``error``
  verdict rather than a guess at what the judge meant.
- **Tool calls are compared as the calls they make:** an answer that calls a tool is shown
  as the function names and arguments it calls, so two answers calling the same function
  with equivalent arguments are a tie whatever their ids.

A policy may replace the instructions (the system message) with its own file
(``judge_prompt:``); the conversation and the two answers are always put the same way, and
the reply must still be the JSON object above.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import orjson

Winner = Literal["A", "B", "tie"]
Verdict = Literal["better", "same", "worse", "error"]
VERDICTS: tuple[Verdict, ...] = ("better", "same", "worse", "error")
JUDGE_MAX_TOKENS = 256
MAX_SHOWN_CHARS = 24_000  # of the conversation: a judge call stays a small, bounded cost

INSTRUCTIONS = """\
You compare two answers to the same conversation and decide which one serves the user better.

Judge only what the user needs: correctness first, then whether the answer does what was asked, \
then clarity. A shorter answer that fully does the job is as good as a longer one; do not reward \
length, formatting or confidence. If an answer calls tools, judge whether the calls (function and \
arguments) are the right ones for the request. If both answers are about equally good, or equally \
bad, answer "tie". The order in which the answers are shown means nothing.

Reply with exactly one JSON object and nothing else:
{"winner": "A" | "B" | "tie", "reason": "<one short line>"}"""

RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "verdict",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"winner": {"type": "string", "enum": ["A", "B", "tie"]}, "reason": {"type": "string"}},
            "required": ["winner", "reason"],
            "additionalProperties": False,
        },
    },
}


def answer_of(body: Mapping[str, Any]) -> str:
    """A chat completion's first choice as the judge sees it: its text, or the tool calls it
    makes (``name(arguments)``, one per line)."""
    choices = body.get("choices") or ()
    message = (choices[0].get("message") if choices and isinstance(choices[0], Mapping) else None) or {}
    return message_text(message)


def message_text(message: Mapping[str, Any]) -> str:
    calls = message.get("tool_calls") or ()
    shown = [_call_text(call) for call in calls if isinstance(call, Mapping)]
    content = _content_text(message.get("content"))
    if shown:
        return "\n".join([*([content] if content else []), *(f"calls {c}" for c in shown)])
    return content


def _call_text(call: Mapping[str, Any]) -> str:
    function = call.get("function") or {}
    arguments = function.get("arguments") or ""
    try:  # equivalent arguments read the same whatever their spacing or key order
        arguments = orjson.dumps(orjson.loads(arguments), option=orjson.OPT_SORT_KEYS).decode()
    except orjson.JSONDecodeError:
        pass
    return f"{function.get('name') or '?'}({arguments})"


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(p.get("text") or "" for p in content if isinstance(p, Mapping))
    return ""


def conversation_text(body: Mapping[str, Any]) -> str:
    """The conversation as the judge reads it: each message as ``[role] text``, the tools
    offered named, the oldest part cut when it is very long."""
    lines = []
    tools = [((t.get("function") or {}).get("name") or "?") for t in body.get("tools") or () if isinstance(t, Mapping)]
    if tools:
        lines.append(f"[tools offered] {', '.join(tools)}")
    for message in body.get("messages") or ():
        if isinstance(message, Mapping):
            lines.append(f"[{message.get('role', '?')}] {message_text(message)}")
    text = "\n".join(lines)
    return text if len(text) <= MAX_SHOWN_CHARS else "[…earlier part cut]\n" + text[-MAX_SHOWN_CHARS:]


def judge_messages(conversation: str, answer_a: str, answer_b: str, instructions: str | None) -> list[dict[str, str]]:
    user = (
        f"<conversation>\n{conversation}\n</conversation>\n\n"
        f"<answer_A>\n{answer_a}\n</answer_A>\n\n<answer_B>\n{answer_b}\n</answer_B>\n\n"
        'Which answer is better? Reply with the JSON object only: {"winner": "A" | "B" | "tie", "reason": "..."}'
    )
    return [{"role": "system", "content": instructions or INSTRUCTIONS}, {"role": "user", "content": user}]


def judge_body(messages: list[dict[str, str]], structured: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": messages, "max_tokens": JUDGE_MAX_TOKENS, "temperature": 0}
    if structured:
        body["response_format"] = RESPONSE_FORMAT
    return body


class JudgeUnreadable(ValueError):
    """The judge's reply is not the one JSON object it was asked for."""


def parse_winner(completion: Mapping[str, Any]) -> tuple[Winner, str]:
    """The winner and the one-line reason from the judge's reply; ``JudgeUnreadable`` otherwise.
    A fenced block (```json … ```) is accepted; anything around the object is not."""
    text = answer_of(completion).strip()
    if text.startswith("```") and text.endswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise JudgeUnreadable("the judge's reply is not JSON") from None
    if not isinstance(value, dict) or value.get("winner") not in ("A", "B", "tie"):
        raise JudgeUnreadable('the judge\'s reply has no "winner" of "A", "B" or "tie"')
    reason = value.get("reason")
    winner: Winner = value["winner"]
    return winner, (reason.splitlines()[0][:300] if isinstance(reason, str) and reason else "")


def combine(cheap_first: Winner, cheap_second: Winner) -> Verdict:
    """The verdict on the cheaper answer from the two orders: as A (``cheap_first``) and as
    B (``cheap_second``). Agreement decides; any disagreement is ``same``."""
    first = AS_A[cheap_first]
    return first if first == AS_B[cheap_second] else "same"


AS_A: dict[Winner, Verdict] = {"A": "better", "B": "worse", "tie": "same"}
AS_B: dict[Winner, Verdict] = {"B": "better", "A": "worse", "tie": "same"}
