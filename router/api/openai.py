"""OpenAI-compatible endpoints: chat completions, embeddings, models, and explain."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from router import costs
from router.api.requests import check_chat_body, check_embedding_body, read_json_object, wants_usage
from router.api.streaming import SSE_HEADERS, relay
from router.dispatch import Answered
from router.explain import decision_json
from router.policy.engine import Decision, decide
from router.policy.features import chat_features, embedding_features
from router.providers.base import Usage
from router.runtime import Runtime, runtime_of

log = logging.getLogger("router.api")
api = APIRouter()


@api.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    runtime = runtime_of(request)
    body = await read_json_object(request, runtime.settings.max_body_bytes)
    check_chat_body(body, runtime.policy.defaults.max_n)
    decision = _decide(runtime, request, body, "chat")
    request_id = request.state.request_id
    if body.get("stream"):
        answered = await runtime.dispatcher.open_stream(decision, body, request.headers, request_id)
        return _stream_response(answered, decision, wants_usage(body))
    answered = await runtime.dispatcher.complete(decision, body, request.headers, request_id)
    return _json_response(runtime, answered, decision)


@api.post("/v1/embeddings")
async def embeddings(request: Request) -> Response:
    runtime = runtime_of(request)
    body = await read_json_object(request, runtime.settings.max_body_bytes)
    check_embedding_body(body)
    decision = _decide(runtime, request, body, "embedding")
    answered = await runtime.dispatcher.complete(decision, body, request.headers, request.state.request_id, embedding=True)
    return _json_response(runtime, answered, decision)


@api.post("/v1/router/explain")
async def explain(request: Request) -> Response:
    runtime = runtime_of(request)
    body = await read_json_object(request, runtime.settings.max_body_bytes)
    kind = "embedding" if "input" in body and "messages" not in body else "chat"
    (check_embedding_body if kind == "embedding" else lambda b: check_chat_body(b, runtime.policy.defaults.max_n))(body)
    decision = _decide(runtime, request, body, kind)
    return Response(orjson.dumps(decision_json(decision)), media_type="application/json")


@api.get("/v1/models")
async def list_models(request: Request) -> Response:
    runtime = runtime_of(request)
    policy = runtime.policy
    created = runtime.loaded_at
    entries = [_model_entry(name, created, "tier-router") for name in policy.routes]
    entries += [_model_entry(tier, created, "tier-router") for tier in policy.tiers if tier not in policy.routes]
    entries += [_model_entry(m.name, created, m.provider) for m in policy.models.values()]
    return Response(orjson.dumps({"object": "list", "data": entries}), media_type="application/json")


def _model_entry(name: str, created: int, owner: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": owner}


def _decide(runtime: Runtime, request: Request, body: dict[str, Any], kind: str) -> Decision:
    features = (chat_features if kind == "chat" else embedding_features)(body, request.headers)
    return decide(runtime.policy, body.get("model"), features, kind=kind, tier_override=request.headers.get("x-router-tier"))


def _routing_headers(answered: Answered, decision: Decision) -> dict[str, str]:
    model = answered.model
    return {
        "x-router-model": model.name,
        "x-router-provider": model.provider,
        "x-router-tier": decision.tier,
        "x-router-route": decision.route,
        "x-router-attempts": str(answered.attempts.count),
    }


def _json_response(runtime: Runtime, answered: Answered, decision: Decision) -> Response:
    completion = answered.completion
    body = completion.body
    body["model"] = answered.model.name
    headers = _routing_headers(answered, decision)
    usage = completion.usage or Usage()
    headers["x-router-cost-usd"] = f"{costs.cost_usd(answered.model, usage):.8f}"
    return Response(orjson.dumps(body), media_type="application/json", headers=headers)


def _stream_response(answered: Answered, decision: Decision, client_wants_usage: bool) -> Response:
    def finished(usage: Usage | None, outcome: str) -> None:
        return None

    chunks = relay(answered.first_chunk, answered.stream, answered.model.name, client_wants_usage, finished)
    headers = {**_routing_headers(answered, decision), **SSE_HEADERS}
    return StreamingResponse(chunks, media_type="text/event-stream", headers=headers)
