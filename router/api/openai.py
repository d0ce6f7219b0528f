"""OpenAI-compatible endpoints: chat completions, embeddings, models, and explain.

Each handler reads like a sentence: parse → run the gateway's operation → format. The
gateway owns the request (decide, admit, dispatch, account); a handler only parses the
body and formats the reply (JSON, or server-sent events in ``api.streaming``).
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from router.api.requests import (
    check_chat_body,
    check_embedding_body,
    check_explain_body,
    read_json_object,
    wants_usage,
)
from router.api.responses import explained_chat_body, is_responses_body
from router.api.streaming import SSEResponse
from router.explain import decision_json
from router.gateway import CompletedReply, Reply
from router.policy.model import ClientKey
from router.runtime import Runtime, runtime_of
from router.snapshot import PolicySnapshot
from router.types import Operation


def _pinned(request: Request) -> tuple[Runtime, PolicySnapshot, ClientKey | None]:
    """The process's services, the policy this request runs under, and its client key."""
    state = request.state
    return runtime_of(request), state.snapshot, state.client_key


async def chat_completions(request: Request) -> Response:
    runtime, snapshot, key = _pinned(request)
    body = await read_json_object(request, runtime.settings.max_body_bytes)
    check_chat_body(body, snapshot.policy.defaults.max_n)
    return _response(await runtime.gateway.chat(request, snapshot, body, key), body)


async def embeddings(request: Request) -> Response:
    runtime, snapshot, key = _pinned(request)
    body = await read_json_object(request, runtime.settings.max_body_bytes)
    check_embedding_body(body)
    return _response(await runtime.gateway.embeddings(request, snapshot, body, key), body)


async def explain(request: Request) -> Response:
    runtime, snapshot, key = _pinned(request)
    body = await read_json_object(request, runtime.settings.max_body_bytes)
    operation: Operation
    if is_responses_body(body, snapshot.policy):  # routed as the chat body it becomes
        body, operation = await explained_chat_body(runtime.gateway, body, key), "responses"
    else:
        operation = check_explain_body(body, snapshot.policy.defaults.max_n)
    decision = await runtime.gateway.explain(snapshot, body, request.headers, operation, key)
    return Response(orjson.dumps(decision_json(decision)), media_type="application/json")


async def list_models(request: Request) -> Response:
    runtime, snapshot, key = _pinned(request)
    policy = snapshot.policy
    created = runtime.loaded_at
    entries = [_model_entry(name, created, "tier-router") for name in policy.routes]
    entries += [_model_entry(tier, created, "tier-router") for tier in policy.tiers if tier not in policy.routes]
    entries += [_model_entry(m.name, created, m.provider) for m in policy.models.values()]
    if key is not None and key.routes is not None:
        entries = [e for e in entries if e["id"] in key.routes]
    return Response(orjson.dumps({"object": "list", "data": entries}), media_type="application/json")


def _model_entry(name: str, created: int, owner: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": owner}


def _response(reply: Reply, body: dict[str, Any]) -> Response:
    if isinstance(reply, CompletedReply):
        return Response(orjson.dumps(reply.body), media_type="application/json", headers=reply.headers)
    return SSEResponse(reply.stream, reply.headers, wants_usage(body))


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/v1/router/explain", explain, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
]
