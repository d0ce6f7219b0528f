"""OpenAI's Responses API over a Chat Completions upstream: pure translation, no I/O.

    to_chat_request(body, *, previous_items=(), native_providers=(), max_tokens_param="max_tokens")
        a Responses request → the chat body (raises InvalidRequest / UntranslatableRequest /
        BuiltinToolUnsupported, each a 400 naming its ``param``)
    to_responses_object(chat_completion, *, request, response_id, created_at, completed_at=None)
        a chat completion → the ``response`` object
    ResponsesStreamTranslator(request=, response_id=, created_at=, model=None)
        .start() / .feed(chunk) / .finish(completed_at=None) / .fail(code, message, param=, error_type=)
        each → the Responses stream events to send, with increasing ``sequence_number``;
        .response: the final ``response`` object once finished or failed
    sse_event(event) → the ``event: …\\ndata: …\\n\\n`` frame

Nothing here imports the gateway; the endpoint, the state store (``store``,
``previous_response_id``) and metrics live with the callers.
"""

from router.responses.errors import BuiltinToolUnsupported, UntranslatableRequest
from router.responses.output import to_responses_object
from router.responses.request import to_chat_request
from router.responses.stream import ResponsesStreamTranslator, sse_event

__all__ = [
    "BuiltinToolUnsupported",
    "ResponsesStreamTranslator",
    "UntranslatableRequest",
    "sse_event",
    "to_chat_request",
    "to_responses_object",
]
