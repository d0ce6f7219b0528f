"""OpenAI's Responses API: ``POST /v1/responses``, ``GET`` and ``DELETE /v1/responses/{id}``.

Parse and format only. ``Gateway.responses`` owns the request (translate to chat, decide,
admit, dispatch, account, store); a stream's chat chunks are formatted here as Responses
events (``router.responses.ResponsesStreamTranslator``, framed by ``sse_event``):
``response.created`` … ``response.completed`` with usage, or, when the upstream fails after
the first chunk, ``error`` then ``response.failed`` (so the openai SDK raises). A finished
response is handed to ``Gateway.keep_response`` before its last event leaves, so a client
continuing from it at once finds it stored.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from router.api.requests import MAX_TOOLS, read_json_object
from router.api.streaming import SSEResponse, stream_failure_message
from router.dispatch import Streaming
from router.errors import InvalidRequest
from router.gateway import CompletedReply, Gateway, ResponsesStreamingReply
from router.policy.model import ClientKey, Policy
from router.responses import ResponsesStreamTranslator, sse_event, to_chat_request
from router.runtime import Runtime, runtime_of
from router.snapshot import PolicySnapshot

# Fields only a Responses body has: with one of them (and no ``messages``) an explain body is
# a Responses request, not an embeddings one.
RESPONSES_ONLY_FIELDS = frozenset(
    {"instructions", "previous_response_id", "max_output_tokens", "text", "reasoning", "tools", "tool_choice", "store"}
)


def _pinned(request: Request) -> tuple[Runtime, PolicySnapshot, ClientKey | None]:
    state = request.state
    return runtime_of(request), state.snapshot, state.client_key


async def create_response(request: Request) -> Response:
    runtime, snapshot, key = _pinned(request)
    body = await read_json_object(request, runtime.settings.max_body_bytes)
    check_responses_body(body)
    reply = await runtime.gateway.responses(request, snapshot, body, key)
    if isinstance(reply, CompletedReply):
        return Response(orjson.dumps(reply.body), media_type="application/json", headers=reply.headers)
    relay = NativeRelay(reply, runtime.gateway) if reply.native else ResponsesRelay(reply, runtime.gateway)
    return SSEResponse(reply.stream, reply.headers, False, relay=relay)


async def retrieve_response(request: Request) -> Response:
    runtime, _, key = _pinned(request)
    response_id = request.path_params["response_id"]
    stored = await runtime.gateway.stored_response(response_id, key)
    if stored is None:
        raise _not_found(response_id)
    return Response(orjson.dumps(stored["response"]), media_type="application/json")


async def delete_response(request: Request) -> Response:
    runtime, _, key = _pinned(request)
    response_id = request.path_params["response_id"]
    if not await runtime.gateway.delete_response(response_id, key):
        raise _not_found(response_id)
    body = {"id": response_id, "object": "response.deleted", "deleted": True}
    return Response(orjson.dumps(body), media_type="application/json")


def _not_found(response_id: str) -> InvalidRequest:
    """Missing, expired, deleted or another team's: the same answer, so existence is not revealed."""
    return InvalidRequest(f"Response with id '{response_id}' not found.", status=404, code="response_not_found")


def check_responses_body(body: Mapping[str, Any]) -> None:
    """What routing needs before translation (the translator checks the rest, naming each field)."""
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequest("'model' must be a string: a route, a tier or a model name.", param="model")
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean.", param="stream")
    limit = body.get("max_output_tokens")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise InvalidRequest("'max_output_tokens' must be a positive integer.", param="max_output_tokens")
    tools = body.get("tools")
    if isinstance(tools, list) and len(tools) > MAX_TOOLS:
        raise InvalidRequest(f"'tools': at most {MAX_TOOLS} tools may be declared.", param="tools")


# explain ---------------------------------------------------------------------------------------
def is_responses_body(body: Mapping[str, Any], policy: Policy) -> bool:
    """A Responses body (to explain): no ``messages``, and ``input`` as a list of items, a
    Responses-only field, or a string ``input`` asked of a chat model by name. A bare string
    ``input`` to a route or tier stays an embeddings body."""
    if "messages" in body or "input" not in body:
        return False
    given = body["input"]
    if not RESPONSES_ONLY_FIELDS.isdisjoint(body) or (
        isinstance(given, list) and any(isinstance(item, Mapping) for item in given)
    ):
        return True
    model = policy.models.get(body.get("model") or "")
    return isinstance(given, str) and model is not None and model.kind == "chat"


async def explained_chat_body(gateway: Gateway, body: Mapping[str, Any], key: ClientKey | None) -> dict[str, Any]:
    """The chat body a Responses body is routed as (with its stored conversation, if any)."""
    check_responses_body(body)
    return to_chat_request(body, previous_items=await gateway.previous_items(body, key))


# streaming -------------------------------------------------------------------------------------
class ResponsesRelay:
    """Chat chunks as Responses events (a ``Relay`` for ``SSEResponse``); the finished response
    is stored before its last event leaves."""

    __slots__ = ("context", "gateway", "model_name", "saw_usage", "translator")

    def __init__(self, reply: ResponsesStreamingReply, gateway: Gateway) -> None:
        context = reply.context
        self.gateway = gateway
        self.context = context
        self.model_name = reply.stream.model.name
        self.saw_usage = False
        self.translator = ResponsesStreamTranslator(
            request=context.body, response_id=context.response_id, created_at=context.created_at, model=self.model_name
        )

    def start(self) -> bytes:
        return _frames(self.translator.start())

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        chunk["model"] = self.model_name
        if not self.saw_usage and chunk.get("usage"):
            self.saw_usage = True
        return _frames(self.translator.feed(chunk))

    async def end(self, stream: Streaming) -> bytes:
        translator = self.translator
        if stream.failure is not None:
            error_type, message = stream_failure_message(stream.failure)
            return _frames(translator.fail(stream.failure, message, error_type=error_type))
        if not self.saw_usage:  # the upstream sent none: the router's count (estimated), as for chat
            translator.feed({"choices": [], "usage": stream.usage().to_openai()})
        events = translator.finish(completed_at=int(time.time()))
        if translator.response is not None:
            await self.gateway.keep_response(self.context, translator.response)
        return _frames(events)


class NativeRelay:
    """A native upstream's Responses events relayed one by one (a ``Relay``), each ``response``
    snapshot under the router's response id and model name; the finished one is stored. A
    failure after the first event ends with ``error`` and ``response.failed``, numbered on."""

    __slots__ = ("context", "gateway", "model_name", "response", "sequence")

    def __init__(self, reply: ResponsesStreamingReply, gateway: Gateway) -> None:
        self.gateway = gateway
        self.context = reply.context
        self.model_name = reply.stream.model.name
        self.response: dict[str, Any] | None = None
        self.sequence = 0

    def start(self) -> bytes:
        return b""

    def chunk(self, chunk: dict[str, Any]) -> bytes:
        response = chunk.get("response")
        if response is not None:
            response["id"] = self.context.response_id
            response["model"] = self.model_name
            self.response = response
        sequence = chunk.get("sequence_number")
        if isinstance(sequence, int):
            self.sequence = sequence + 1
        return sse_event(chunk)

    async def end(self, stream: Streaming) -> bytes:
        if stream.failure is None:
            if self.response is not None:
                await self.gateway.keep_response(self.context, self.response)
            return b""
        error_type, message = stream_failure_message(stream.failure)
        code = stream.failure
        error = {"type": error_type, "code": code, "message": message, "param": None}
        failed = {**(self.response or {}), "status": "failed", "error": {"code": code, "message": message}}
        events = [
            {"type": "error", "sequence_number": self.sequence, "code": code, "message": message, "param": None}
            | {"error": error},
            {"type": "response.failed", "sequence_number": self.sequence + 1, "response": failed},
        ]
        return _frames(events)


def _frames(events: Iterable[Mapping[str, Any]]) -> bytes:
    return b"".join(map(sse_event, events))


routes = [
    Route("/v1/responses", create_response, methods=["POST"]),
    Route("/v1/responses/{response_id}", retrieve_response, methods=["GET"]),
    Route("/v1/responses/{response_id}", delete_response, methods=["DELETE"]),
]
