"""Legacy ``POST /v1/completions``: parse (translate to a chat body), run the gateway's
``text_completion`` operation, format the chat answer back as ``text_completion``
(``router.completions`` holds both translations)."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from router import completions as translate
from router.api.requests import check_chat_body, read_json_object, wants_usage
from router.api.streaming import SSEResponse
from router.gateway import CompletedReply
from router.runtime import runtime_of


async def completions(request: Request) -> Response:
    runtime, state = runtime_of(request), request.state
    snapshot = state.snapshot
    body = translate.chat_body(await read_json_object(request, runtime.settings.max_body_bytes))
    check_chat_body(body, snapshot.policy.defaults.max_n)
    reply = await runtime.gateway.text_completion(request, snapshot, body, state.client_key)
    if isinstance(reply, CompletedReply):
        completion = translate.completion_body(reply.body)
        return Response(orjson.dumps(completion), media_type="application/json", headers=reply.headers)
    return SSEResponse(reply.stream, reply.headers, wants_usage(body), translate.completion_chunk)


routes = [Route("/v1/completions", completions, methods=["POST"])]
