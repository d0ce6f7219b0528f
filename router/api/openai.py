"""OpenAI-compatible endpoints: chat completions, embeddings, models, and explain.

Each handler reads like a sentence: parse → decide → admit → dispatch → respond.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from router.accounting import RequestRecord
from router.api.requests import check_chat_body, check_embedding_body, read_json_object, wants_usage
from router.api.streaming import SSE_HEADERS, StreamTally, relay
from router.dispatch import Answered
from router.explain import decision_json
from router.gateway import Gateway
from router.policy.engine import Decision
from router.policy.features import request_kind
from router.policy.model import ClientKey
from router.runtime import runtime_of


def _gateway_and_key(request: Request) -> tuple[Gateway, ClientKey | None]:
    return request.state.gateway, getattr(request.state, "client_key", None)


async def chat_completions(request: Request) -> Response:
    gateway, key = _gateway_and_key(request)
    body = await read_json_object(request, runtime_of(request).settings.max_body_bytes)
    check_chat_body(body, gateway.policy.defaults.max_n)
    decision = await gateway.decide(body, request.headers, "chat", key)
    streaming = bool(body.get("stream"))
    record = request.state.record = gateway.record(request.state.request_id, decision, "chat", streaming, key)
    cache_key = gateway.cache_key(decision, body, record)
    cached = await gateway.cached(cache_key, record)
    if cached is not None:
        return _json_response(cached, decision, record, {"x-router-cache": "hit"})
    limits = await gateway.admit(decision, record, key, body.get("n") or 1)
    if streaming:
        answered = await gateway.open_stream(decision, body, request, record)
        return _stream_response(gateway, answered, decision, record, wants_usage(body), limits)
    answered = await gateway.complete(decision, body, request, record)
    await gateway.remember(cache_key, decision, answered)
    return _json_response(answered, decision, record, {**limits, **({"x-router-cache": "miss"} if cache_key else {})})


async def embeddings(request: Request) -> Response:
    gateway, key = _gateway_and_key(request)
    body = await read_json_object(request, runtime_of(request).settings.max_body_bytes)
    check_embedding_body(body)
    decision = await gateway.decide(body, request.headers, "embedding", key)
    record = request.state.record = gateway.record(request.state.request_id, decision, "embeddings", False, key)
    limits = await gateway.admit(decision, record, key, 1)
    answered = await gateway.complete(decision, body, request, record, embedding=True)
    return _json_response(answered, decision, record, limits)


async def explain(request: Request) -> Response:
    gateway, key = _gateway_and_key(request)
    body = await read_json_object(request, runtime_of(request).settings.max_body_bytes)
    kind = request_kind(body)
    if kind == "embedding":
        check_embedding_body(body)
    else:
        check_chat_body(body, gateway.policy.defaults.max_n)
    decision = await gateway.decide(body, request.headers, kind, key)
    return Response(orjson.dumps(decision_json(decision)), media_type="application/json")


async def list_models(request: Request) -> Response:
    gateway, key = _gateway_and_key(request)
    policy = gateway.policy
    created = runtime_of(request).loaded_at
    entries = [_model_entry(name, created, "tier-router") for name in policy.routes]
    entries += [_model_entry(tier, created, "tier-router") for tier in policy.tiers if tier not in policy.routes]
    entries += [_model_entry(m.name, created, m.provider) for m in policy.models.values()]
    if key is not None and key.routes is not None:
        entries = [e for e in entries if e["id"] in key.routes]
    return Response(orjson.dumps({"object": "list", "data": entries}), media_type="application/json")


def _model_entry(name: str, created: int, owner: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": owner}


def _routing_headers(answered: Answered, decision: Decision, record: RequestRecord) -> dict[str, str]:
    model = answered.model
    return {
        "x-router-model": model.name,
        "x-router-provider": model.provider,
        "x-router-tier": decision.tier,
        "x-router-route": decision.route,
        "x-router-attempts": str(record.attempts),
    }


def _json_response(answered: Answered, decision: Decision, record: RequestRecord, extra: dict[str, str]) -> Response:
    body = answered.completion.body
    body["model"] = answered.model.name
    headers = {**_routing_headers(answered, decision, record), **extra}
    headers["x-router-cost-usd"] = f"{record.cost_usd:.8f}"
    if record.usage_estimated:
        headers["x-router-cost-estimated"] = "true"
    return Response(orjson.dumps(body), media_type="application/json", headers=headers)


def _stream_response(
    gateway: Gateway,
    answered: Answered,
    decision: Decision,
    record: RequestRecord,
    client_wants_usage: bool,
    extra: dict[str, str],
) -> Response:
    async def finished(tally: StreamTally) -> None:
        record.usage, record.usage_estimated = tally.usage, tally.estimated
        record.upstream_s += tally.upstream_s
        if tally.first_chunk_at is not None:
            record.ttft_s = tally.first_chunk_at - record.started
        record.outcome = tally.outcome
        if tally.error_reason or tally.outcome == "cancelled":
            record.error_type = tally.error_reason or "cancelled"
        await gateway.dispatcher.stream_ended(record, answered, tally.usage, tally.error_reason)
        await gateway.finish(record)

    timeouts = gateway.dispatcher.timeouts(decision.route, answered.model)
    chunks = relay(
        answered.first_chunks,
        answered.stream,
        answered.model.name,
        client_wants_usage,
        timeouts,
        gateway.estimate_usage(record),
        finished,
    )
    headers = {**_routing_headers(answered, decision, record), **SSE_HEADERS, **extra}
    return StreamingResponse(chunks, media_type="text/event-stream", headers=headers)


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/v1/router/explain", explain, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
]
