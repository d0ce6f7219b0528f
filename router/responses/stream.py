"""Chat Completion chunks, translated to Responses API stream events (data in, data out).

A ``ResponsesStreamTranslator`` lives for one streamed response. The caller feeds it each
upstream chunk (a dict) and sends on the events it returns, in order; it calls ``finish()``
when the upstream stream ends and ``fail()`` if it breaks. One item is open at a time, as at
OpenAI:

    start()   response.created, response.in_progress                       (once; feed starts it)
    feed()    reasoning  output_item.added, content_part.added, reasoning_text.delta…
              text       output_item.added, content_part.added, output_text.delta…
              refusal    content_part.added, refusal.delta…
              tool call  output_item.added (function_call), function_call_arguments.delta…
              (the open item closes with its …done, content_part.done, output_item.done
               when an item of another kind or another tool call begins)
    finish()  closes the open item; response.completed (or response.incomplete on
              finish_reason length / content_filter) with usage from the usage-only chunk
    fail()    error (flat code/message as documented, nested ``error`` as OpenAI sends it, so
              the openai SDK raises), then response.failed; the open item is kept as incomplete

After ``finish()`` or ``fail()`` every method returns no events. Chunks without choices, empty
deltas and role-only deltas produce none. A tool-call fragment for a call already closed
(upstreams stream calls one after another) is ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import orjson

from router.responses.output import (
    ItemIds,
    ItemStatus,
    function_call_item,
    message_item,
    reasoning_item,
    refusal_part,
    response_envelope,
    response_error,
    text_part,
    usage_of,
)

PartKind = Literal["output_text", "refusal", "reasoning_text"]
_INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}
_DELTA_EVENT = {
    "output_text": "response.output_text.delta",
    "refusal": "response.refusal.delta",
    "reasoning_text": "response.reasoning_text.delta",
}
_DONE_EVENT = {
    "output_text": "response.output_text.done",
    "refusal": "response.refusal.done",
    "reasoning_text": "response.reasoning_text.done",
}
_PART_FIELD = {"output_text": "text", "refusal": "refusal", "reasoning_text": "text"}


class _OpenItem:
    """The item being streamed: its final dict, its place, and the part or arguments in flight."""

    __slots__ = ("call_index", "item", "output_index", "part_kind", "pieces")

    def __init__(self, item: dict[str, Any], output_index: int, call_index: int | None = None) -> None:
        self.item = item
        self.output_index = output_index
        self.call_index = call_index
        self.part_kind: PartKind | None = None
        self.pieces: list[str] = []


class ResponsesStreamTranslator:
    def __init__(
        self, *, request: Mapping[str, Any], response_id: str, created_at: float, model: str | None = None
    ) -> None:
        """``request``: the Responses body as the client sent it (echoed in every response
        snapshot); ``model``: the model chosen, until the upstream's chunks name it."""
        self._request = request
        self._response_id = response_id
        self._created_at = created_at
        self._model: Any = model or request.get("model")
        self._ids = ItemIds(response_id)
        self._sequence = 0
        self._events: list[dict[str, Any]] = []
        self._output: list[dict[str, Any]] = []
        self._open: _OpenItem | None = None
        self._closed_calls: set[int] = set()
        self._finish_reason: str | None = None
        self._usage: Mapping[str, Any] | None = None
        self._started = False
        self.response: dict[str, Any] | None = None
        """The final ``response`` object once ``finish()`` or ``fail()`` ran (for the store)."""

    @property
    def done(self) -> bool:
        return self.response is not None

    def start(self) -> list[dict[str, Any]]:
        if self._started or self.done:
            return []
        self._begin()
        return self._flush()

    def _begin(self) -> None:
        self._started = True
        snapshot = self._snapshot("in_progress")
        self._emit("response.created", response=snapshot)
        self._emit("response.in_progress", response=snapshot)

    def feed(self, chunk: Mapping[str, Any]) -> list[dict[str, Any]]:
        if self.done:
            return []
        if not self._started:
            self._begin()  # its events stay queued: flushed below with this chunk's
        model = chunk.get("model")
        if model:
            self._model = model
        usage = chunk.get("usage")
        if usage:
            self._usage = usage
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) == 0:
                self._choice(choice)
        return self._flush()

    def finish(self, *, completed_at: float | None = None) -> list[dict[str, Any]]:
        if self.done:
            return []
        events = self.start()
        incomplete = _INCOMPLETE_REASONS.get(self._finish_reason or "")
        self._close("incomplete" if incomplete else "completed")
        status = "incomplete" if incomplete else "completed"
        self.response = self._snapshot(status, incomplete_reason=incomplete, completed_at=completed_at)
        self._emit(f"response.{status}", response=self.response)
        return events + self._flush()

    def fail(
        self, code: str, message: str, *, param: str | None = None, error_type: str = "server_error"
    ) -> list[dict[str, Any]]:
        """The events that end a stream the upstream broke (or the gateway gave up on)."""
        if self.done:
            return []
        events = self.start()
        if self._open is not None:
            self._open.item["status"] = "incomplete"
            if self._open.part_kind is not None or self._open.item["type"] == "function_call":
                self._store_pieces(self._open)
            self._open = None
        self._emit(
            "error",
            code=code,
            message=message,
            param=param,
            error={"type": error_type, "code": code, "message": message, "param": param},
        )
        self.response = self._snapshot("failed", error=response_error(code, message))
        self._emit("response.failed", response=self.response)
        return events + self._flush()

    # -- chunk handling ---------------------------------------------------------------------------

    def _choice(self, choice: Mapping[str, Any]) -> None:
        delta = choice.get("delta") or {}
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if reasoning and isinstance(reasoning, str):
            self._piece("reasoning", "reasoning_text", reasoning)
        if delta.get("content"):
            self._piece("message", "output_text", delta["content"])
        if delta.get("refusal"):
            self._piece("message", "refusal", delta["refusal"])
        for call in delta.get("tool_calls") or ():
            self._call(call)
        if choice.get("finish_reason"):
            self._finish_reason = choice["finish_reason"]

    def _piece(self, item_type: str, part_kind: PartKind, text: str) -> None:
        current = self._open
        if current is None or current.item["type"] != item_type:
            self._close("completed")
            item_id = self._ids.next("rs" if item_type == "reasoning" else "msg")
            item = (
                reasoning_item(item_id, "", "in_progress")
                if item_type == "reasoning"
                else message_item(item_id, [], "in_progress")
            )
            current = self._open_item(item)
        if current.part_kind != part_kind:
            self._close_part(current)
            self._open_part(current, part_kind)
        current.pieces.append(text)
        event = {
            "type": _DELTA_EVENT[part_kind],
            "sequence_number": self._sequence,
            "item_id": current.item["id"],
            "output_index": current.output_index,
            "content_index": len(current.item["content"]),
            "delta": text,
        }
        if part_kind == "output_text":
            event["logprobs"] = []
        self._events.append(event)  # the hot path: one dict per delta, built in place
        self._sequence += 1

    def _call(self, call: Mapping[str, Any]) -> None:
        index = call.get("index", 0)
        function = call.get("function") or {}
        current = self._open
        if current is None or current.call_index != index:
            if index in self._closed_calls:
                return
            self._close("completed")
            call_id = call.get("id") or self._ids.call_id(index)
            item = function_call_item(self._ids.next("fc"), call_id, "", "", "in_progress")
            item["name"] = function.get("name") or ""
            current = self._open_item(item, call_index=index)
        elif function.get("name") and not current.item["name"]:
            current.item["name"] = function["name"]
        arguments = function.get("arguments")
        if arguments:
            current.pieces.append(arguments)
            self._events.append(
                {
                    "type": "response.function_call_arguments.delta",
                    "sequence_number": self._sequence,
                    "item_id": current.item["id"],
                    "output_index": current.output_index,
                    "delta": arguments,
                }
            )
            self._sequence += 1

    # -- items ------------------------------------------------------------------------------------

    def _open_item(self, item: dict[str, Any], call_index: int | None = None) -> _OpenItem:
        opened = _OpenItem(item, len(self._output), call_index)
        self._output.append(item)
        self._open = opened
        self._emit("response.output_item.added", output_index=opened.output_index, item=_copy(item))
        return opened

    def _close(self, status: ItemStatus) -> None:
        current = self._open
        if current is None:
            return
        self._open = None
        item = current.item
        if item["type"] == "function_call":
            self._closed_calls.add(current.call_index or 0)
            item["arguments"] = "".join(current.pieces)
            self._emit("response.function_call_arguments.done", **self._where(current), arguments=item["arguments"])
        else:
            self._close_part(current)
        item["status"] = status
        self._emit("response.output_item.done", output_index=current.output_index, item=item)

    def _open_part(self, current: _OpenItem, kind: PartKind) -> None:
        current.part_kind = kind
        part = {"output_text": text_part(""), "refusal": refusal_part("")}.get(kind) or {"type": kind, "text": ""}
        self._emit(
            "response.content_part.added",
            **self._where(current),
            content_index=len(current.item["content"]),
            part=part,
        )

    def _close_part(self, current: _OpenItem) -> None:
        kind = current.part_kind
        if kind is None:
            return
        part = self._store_pieces(current)
        content_index = len(current.item["content"]) - 1
        text = part[_PART_FIELD[kind]]
        done = {_PART_FIELD[kind]: text, **({"logprobs": []} if kind == "output_text" else {})}
        self._emit(_DONE_EVENT[kind], **self._where(current), content_index=content_index, **done)
        self._emit("response.content_part.done", **self._where(current), content_index=content_index, part=part)

    def _store_pieces(self, current: _OpenItem) -> dict[str, Any]:
        """Moves the text in flight into the item (its part or its arguments)."""
        text = "".join(current.pieces)
        current.pieces = []
        if current.item["type"] == "function_call":
            current.item["arguments"] = text
            return current.item
        kind = current.part_kind
        current.part_kind = None
        part = text_part(text) if kind == "output_text" else refusal_part(text) if kind == "refusal" else None
        if part is None:
            part = {"type": "reasoning_text", "text": text}
        current.item["content"].append(part)
        return part

    # -- events -----------------------------------------------------------------------------------

    def _where(self, current: _OpenItem) -> dict[str, Any]:
        return {"item_id": current.item["id"], "output_index": current.output_index}

    def _emit(self, event_type: str, **fields: Any) -> None:
        self._events.append({"type": event_type, "sequence_number": self._sequence, **fields})
        self._sequence += 1

    def _flush(self) -> list[dict[str, Any]]:
        events, self._events = self._events, []
        return events

    def _snapshot(
        self,
        status: str,
        *,
        incomplete_reason: str | None = None,
        error: dict[str, Any] | None = None,
        completed_at: float | None = None,
    ) -> dict[str, Any]:
        return response_envelope(
            self._request,
            response_id=self._response_id,
            created_at=self._created_at,
            model=self._model,
            status=status,
            output=list(self._output),
            usage=usage_of(self._usage) if status != "in_progress" else None,
            incomplete_reason=incomplete_reason,
            error=error,
            completed_at=completed_at,
        )


def _copy(item: dict[str, Any]) -> dict[str, Any]:
    return {**item, "content": []} if "content" in item else dict(item)


def sse_event(event: Mapping[str, Any]) -> bytes:
    """One event as a server-sent event frame, named by its type as OpenAI names them."""
    kind = event["type"]
    prefix = _FRAME_PREFIX.get(kind) or b"event: " + str(kind).encode() + b"\ndata: "
    return prefix + orjson.dumps(event) + b"\n\n"


_FRAME_PREFIX = {
    kind: b"event: " + kind.encode() + b"\ndata: "
    for kind in (*_DELTA_EVENT.values(), "response.function_call_arguments.delta")
}
