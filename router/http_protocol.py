"""uvicorn's httptools protocol with the bounds the application cannot enforce itself.

The application only sees a request once its whole header block has been parsed, and it
can only time a body it is reading. Left to itself, httptools buffers a header line that
never ends (hundreds of MB) and uvicorn waits forever for a body that stops arriving. This
protocol, given to uvicorn as its ``http`` class, counts while reading:

* header count and size (names + values) are checked header by header, and the raw header
  block (request line, headers, separators) is counted chunk by chunk: past the limit the
  client gets 431 and the connection is closed, so at most the limit plus one socket read
  is ever buffered;
* a client that stops sending for ``read_timeout_s`` in the middle of a request (headers
  or body) gets 408 and the connection is closed; a connection that sends nothing at all
  is closed after the same time. One timer per connection, armed only while a request is
  arriving in more than one read; each read only stores the time.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from router.errors import HeadersTooLarge, InvalidRequest, RouterError
from router.middleware import new_request_id

MAX_HEADER_COUNT = 100
MAX_HEADER_BYTES = 32 * 1024
HEADERS_TOO_LARGE = (
    f"Request headers are too large: at most {MAX_HEADER_COUNT} headers and {MAX_HEADER_BYTES // 1024} KiB in all."
)


@dataclass(frozen=True)
class HttpLimits:
    max_header_count: int = MAX_HEADER_COUNT
    max_header_bytes: int = MAX_HEADER_BYTES  # header names + values
    read_timeout_s: float = 30.0

    @property
    def max_header_block_bytes(self) -> int:
        """Raw bytes of request line + headers + separators: room for the URL and framing."""
        return 2 * self.max_header_bytes


class BoundedConfig(uvicorn.Config):
    """uvicorn's ``Config`` plus the limits ``BoundedHttpToolsProtocol`` enforces (pickled
    to worker processes with the rest of the config)."""

    http_limits: HttpLimits = HttpLimits()


class _HeadersOverLimit(Exception):
    """Raised from a parser callback to stop parsing at once."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = config.http_limits if isinstance(config, BoundedConfig) else HttpLimits()
        self.began_a_request = False
        self.reading_request = False  # between the first byte of a request and its end
        self.in_header_block = False
        self.header_count = 0
        self.header_bytes = 0
        self.header_block_bytes = 0
        # uvicorn calls connection_made right after this: the clock starts for a silent client.
        self.last_read_at = self.loop.time()
        self.read_timer: asyncio.TimerHandle | None = None
        self._arm_read_timer(self.limits.read_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_read_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """uvicorn's ``data_received`` plus the header bounds and the read clock."""
        self._unset_keepalive_if_required()
        self.last_read_at = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, _HeadersOverLimit):
                self._refuse(HeadersTooLarge(HEADERS_TOO_LARGE))
            else:
                self._bad_request()
            return
        except httptools.HttpParserError:
            self._bad_request()
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self._stop_read_timer()  # the connection is the websocket protocol's now
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        if self.in_header_block:
            # The whole read is counted even if a pipelined request's body tail opened it.
            self.header_block_bytes += len(data)
            if self.header_block_bytes > self.limits.max_header_block_bytes:
                self._refuse(HeadersTooLarge(HEADERS_TOO_LARGE))
                return
        if self.reading_request and self.read_timer is None:
            self._arm_read_timer(self.limits.read_timeout_s)

    # Parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.began_a_request = self.reading_request = self.in_header_block = True
        self.header_count = self.header_bytes = self.header_block_bytes = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        self.header_bytes += len(name) + len(value)
        if self.header_count > self.limits.max_header_count or self.header_bytes > self.limits.max_header_bytes:
            raise _HeadersOverLimit
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.in_header_block = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.reading_request = False
        self._stop_read_timer()
        super().on_message_complete()

    # The read timeout
    def _arm_read_timer(self, delay: float) -> None:
        self.read_timer = self.loop.call_later(delay, self._on_read_timer)

    def _stop_read_timer(self) -> None:
        if self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None

    def _on_read_timer(self) -> None:
        self.read_timer = None
        never_asked = not self.began_a_request
        if self.transport.is_closing() or not (self.reading_request or never_asked):
            return
        timeout = self.limits.read_timeout_s
        now = self.loop.time()
        if self.flow.read_paused:
            # uvicorn stopped reading until the app takes what it has: the client is not idle.
            self.last_read_at = now
        idle = now - self.last_read_at
        if idle < timeout:
            self._arm_read_timer(timeout - idle)
        elif never_asked:
            self.transport.close()
        else:
            self._timed_out()

    def _timed_out(self) -> None:
        timed_out = InvalidRequest(
            f"The router received no bytes of this request for {self.limits.read_timeout_s:g} s"
            " (ROUTER_CLIENT_READ_TIMEOUT_S); send the whole request without pausing.",
            status=408,
            code="request_timeout",
        )
        cycle = None if self.in_header_block else self.cycle
        if cycle is None:
            self._refuse(timed_out)
            return
        # The app may be waiting on the body: it gets a disconnect, and its sends go nowhere.
        if not cycle.response_started:
            cycle.response_started = True
            self._refuse(timed_out)
        else:
            self.transport.close()
        cycle.disconnected = True
        cycle.message_event.set()

    # Answers written before (or instead of) the application
    def _refuse(self, error: RouterError) -> None:
        body = error.body_bytes()
        head = [STATUS_LINE[error.status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(
            b"content-type: application/json\r\ncontent-length: %d\r\nx-request-id: %s\r\nconnection: close\r\n\r\n"
            % (len(body), new_request_id().encode())
        )
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    def _bad_request(self) -> None:
        message = "Invalid HTTP request received."
        self.logger.warning(message)
        self.send_400_response(message)
