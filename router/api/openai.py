"""OpenAI-compatible endpoints: chat completions, embeddings, models, and explain.

Each handler reads like a sentence: parse → run the gateway's operation → respond. The
gateway owns the request (decide, admit, dispatch, account); a handler only formats.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from router.accounting import RequestRecord
from router.api.requests import check_chat_body, check_embedding_body, read_json_object, wants_usage
from router.api.streaming import Relay, RelayResponse
from router.dispatch import Answered
from router.explain import decision_json
from router.gateway import Gateway, Reply
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
    reply = await gateway.chat(request, body, key)
    if reply.answered.stream is not None:
        return _stream_response(gateway, reply, wants_usage(body))
    return _json_response(reply)


async def embeddings(request: Request) -> Response:
    gateway, key = _gateway_and_key(request)
    body = await read_json_object(request, runtime_of(request).settings.max_body_bytes)
    check_embedding_body(body)
    return _json_response(await gateway.embeddings(request, body, key))


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


def _json_response(reply: Reply) -> Response:
    answered, record = reply.answered, reply.record
    assert answered.completion is not None
    body = answered.completion.body
    body["model"] = answered.model.name
    headers = {**_routing_headers(answered, reply.decision, record), **reply.headers}
    headers["x-router-cost-usd"] = f"{record.cost_usd:.8f}"
    if record.usage_estimated:
        headers["x-router-cost-estimated"] = "true"
    return Response(orjson.dumps(body), media_type="application/json", headers=headers)


def _stream_response(gateway: Gateway, reply: Reply, client_wants_usage: bool) -> Response:
    answered, record = reply.answered, reply.record
    assert answered.stream is not None
    relay = Relay(
        answered.first_chunks,
        answered.stream,
        answered.model.name,
        client_wants_usage,
        gateway.dispatcher.timeouts(reply.decision.route, answered.model),
        record.started,
        gateway.estimate_usage(record),
        functools.partial(gateway.end_stream, record, answered),
    )
    return RelayResponse(relay, {**_routing_headers(answered, reply.decision, record), **reply.headers})


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/embeddings", embeddings, methods=["POST"]),
    Route("/v1/router/explain", explain, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
]
