"""What the engine needs to know about a request, read once from its body and headers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from router.policy import tokens
from router.policy.model import Policy


@dataclass(frozen=True, slots=True)
class RequestFeatures:
    prompt_tokens: int
    requested_output_tokens: int | None = None
    n: int = 1
    needs: frozenset[str] = frozenset()
    headers: Mapping[str, str] = field(default_factory=dict)
    params: frozenset[str] = frozenset()
    difficulty: float | None = None  # predicted, only for a chat request on an escalating route

    @property
    def uses_tools(self) -> bool:
        return "tools" in self.needs


def chat_features(body: Mapping[str, Any], headers: Mapping[str, str]) -> RequestFeatures:
    messages = body.get("messages") or []
    tools, functions = body.get("tools"), body.get("functions")
    needs: set[str] = set()
    if tools or functions:
        needs.add("tools")
    if _has_image(messages):
        needs.add("vision")
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        needs.add("json_schema")
    requested = body.get("max_completion_tokens") or body.get("max_tokens")
    n = body.get("n")
    counter = tokens.PromptCounter()  # one budget of exact counting for the whole request
    return RequestFeatures(
        prompt_tokens=counter.messages(messages) + counter.tools(tools) + counter.tools(functions),
        requested_output_tokens=requested if isinstance(requested, int) else None,
        n=n if isinstance(n, int) else 1,
        needs=frozenset(needs),
        headers=headers,
        params=frozenset(body),
    )


def with_difficulty(
    policy: Policy, asked: str | None, body: Mapping[str, Any], features: RequestFeatures
) -> RequestFeatures:
    """``features`` with the conversation's predicted difficulty when ``asked`` names a route
    that escalates (a chat request); otherwise unchanged, and the predictor is never touched.
    The predictor was loaded with the policy (``loader``), so this is a cached look-up and a
    sub-millisecond score."""
    route = policy.routes.get(asked or policy.defaults.route)
    if route is None or not route.escalate:
        return features
    from router.difficulty import load_predictor  # cheap: loaded and cached at policy load

    messages: Sequence[Mapping[str, Any]] = body.get("messages") or []
    return replace(features, difficulty=load_predictor().score(messages))


def request_kind(body: Mapping[str, Any]) -> str:
    """``embedding`` for an embeddings body (``input`` without ``messages``), else ``chat``."""
    return "embedding" if "input" in body and "messages" not in body else "chat"


def features_for(kind: str, body: Mapping[str, Any], headers: Mapping[str, str]) -> RequestFeatures:
    return (chat_features if kind == "chat" else embedding_features)(body, headers)


def embedding_features(body: Mapping[str, Any], headers: Mapping[str, str]) -> RequestFeatures:
    return RequestFeatures(
        prompt_tokens=tokens.count_input(body.get("input")), requested_output_tokens=0, headers=headers
    )


def _has_image(messages: list[Any]) -> bool:
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(
            isinstance(p, dict) and p.get("type") in ("image_url", "input_image") for p in content
        ):
            return True
    return False
