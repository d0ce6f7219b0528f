"""The HTTP layer bounds every request before the application sees it (issue 9, item 2;
RELIABILITY.md A6, A7): raw sockets against a real ``router serve`` process."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.openai_upstream import FakeOpenAIUpstream, Reply
from tests.harness import RunningRouter, two_model_policy, write_policy
from tests.policies import key
from tests.processes import RouterProcess, send_raw, wait_until

READ_TIMEOUT_S = 1.0
MiB = 1024 * 1024
HELLO = b'{"model": "standard", "messages": [{"role": "user", "content": "hi"}]}'
CHAT_HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


@pytest.fixture(scope="module")
def served(upstream_server: FakeOpenAIUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RouterProcess]:
    policy = write_policy(tmp_path_factory.mktemp("http"), two_model_policy(upstream_server.base_url))
    with RouterProcess(policy, env={"ROUTER_CLIENT_READ_TIMEOUT_S": str(READ_TIMEOUT_S)}) as process:
        yield process


@pytest.fixture()
def proxy(served: RouterProcess, upstream: FakeOpenAIUpstream) -> RouterProcess:
    return served


def rss_mb(process: RouterProcess) -> float:
    assert process.process is not None
    for line in Path(f"/proc/{process.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def healthy(process: RouterProcess) -> bool:
    return httpx.get(f"{process.url}/healthz", timeout=2).status_code == 200


def pour(conn: socket.socket, head: bytes, filler: bytes, total: int) -> bool:
    """Send ``head`` then ``filler`` repeatedly up to ``total`` bytes; True if the server
    closed the connection before all of it was sent."""
    try:
        conn.sendall(head)
        for _ in range(total // len(filler)):
            conn.sendall(filler)
    except OSError:
        return True
    return False


def answer_of(conn: socket.socket, timeout_s: float = 5) -> bytes | None:
    """What the server wrote before closing; None if it never closed within ``timeout_s``."""
    conn.settimeout(timeout_s)
    answer = b""
    try:
        while received := conn.recv(65536):
            answer += received
    except ConnectionResetError:
        pass  # closed with our unread bytes still in its buffer: any answer is lost
    except TimeoutError:
        return None
    return answer


def test_endless_header_line_is_cut_off_and_memory_stays_bounded(proxy):
    before = rss_mb(proxy)
    connections = [socket.create_connection(("127.0.0.1", proxy.port), timeout=10) for _ in range(4)]
    try:
        results: dict[int, bool] = {}

        def flood(index: int, conn: socket.socket) -> None:
            results[index] = pour(conn, CHAT_HEAD + b"X-Long: ", b"a" * 256 * 1024, 32 * MiB)

        threads = [threading.Thread(target=flood, args=(i, c)) for i, c in enumerate(connections)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        grown = rss_mb(proxy) - before  # measured while the clients still hold their sockets
        answers = [answer_of(conn) for conn in connections]
    finally:
        for conn in connections:
            conn.close()
    assert all(results.values()), "the server read a 32 MiB header line to the end"
    for answer in answers:
        assert answer is not None and (answer == b"" or answer.startswith(b"HTTP/1.1 431"))
    assert grown < 10 * len(connections), f"RSS grew {grown:.1f} MB for {len(connections)} connections"
    assert healthy(proxy)
    assert rss_mb(proxy) < before + 10


def test_header_line_over_the_limit_gets_431_when_the_client_waits(proxy):
    request = CHAT_HEAD + b"X-Long: " + b"a" * 100_000  # never ends, but the client stops and listens
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as conn:
        conn.sendall(request)
        answer = answer_of(conn)
    assert answer is not None and answer.startswith(b"HTTP/1.1 431")
    assert b'"code":"request_headers_too_large"' in answer and b"connection: close" in answer


def test_more_than_100_headers_get_431_before_the_header_block_ends(proxy):
    endless = CHAT_HEAD + b"".join(b"X-H%d: v\r\n" % i for i in range(20_000))  # no blank line
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as conn:
        closed_early = pour(conn, endless, b"X-More: v\r\n", 1 * MiB)
        answer = answer_of(conn)
    assert answer is not None, "the server kept reading headers"
    assert closed_early or answer.startswith(b"HTTP/1.1 431")
    assert answer == b"" or b"request_headers_too_large" in answer
    assert healthy(proxy)


def test_stalled_body_gets_408_after_the_read_timeout_and_the_connection_closes(proxy):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as conn:
        conn.sendall(CHAT_HEAD + b"Content-Length: 1000\r\n\r\n" + HELLO[:20])
        started = time.monotonic()
        answer = answer_of(conn, timeout_s=READ_TIMEOUT_S + 4)
        waited = time.monotonic() - started
    assert answer is not None, "a stalled body was never answered"
    assert answer.startswith(b"HTTP/1.1 408") and b'"code":"request_timeout"' in answer
    assert b"ROUTER_CLIENT_READ_TIMEOUT_S" in answer
    assert READ_TIMEOUT_S * 0.9 <= waited < READ_TIMEOUT_S + 2


def test_stalled_header_block_gets_408_and_the_connection_closes(proxy):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as conn:
        conn.sendall(CHAT_HEAD + b"X-Half: ")
        answer = answer_of(conn, timeout_s=READ_TIMEOUT_S + 4)
    assert answer is not None and answer.startswith(b"HTTP/1.1 408")


def test_connection_that_never_sends_a_request_is_closed_after_the_read_timeout(proxy):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as conn:
        assert answer_of(conn, timeout_s=READ_TIMEOUT_S + 4) == b""


def stalled_uploads(proxy: RouterProcess, count: int) -> list[bytes | None]:
    """``count`` uploads that each send 8 of their declared 25 MiB and stall; their answers."""
    declared = 25 * MiB  # under ROUTER_MAX_BODY_MB (32)
    connections = [socket.create_connection(("127.0.0.1", proxy.port), timeout=10) for _ in range(count)]
    try:
        for conn in connections:
            pour(conn, CHAT_HEAD + b"Content-Length: %d\r\n\r\n" % declared, b"x" * MiB, 8 * MiB)
        return [answer_of(conn, timeout_s=READ_TIMEOUT_S + 5) for conn in connections]
    finally:
        for conn in connections:
            conn.close()


def test_stalled_uploads_are_answered_and_their_memory_returns(proxy):
    stalled_uploads(proxy, 1)  # warm-up: the first 408's code paths and the allocator's arenas
    before = rss_mb(proxy)
    answers = stalled_uploads(proxy, 4)
    for answer in answers:
        assert answer is not None and answer.startswith(b"HTTP/1.1 408")
    assert "Traceback" not in proxy.logs() and "unhandled error" not in proxy.logs()
    # The 32 MB read goes back to the allocator (once the connections' buffers are freed);
    # allow a few MB it keeps for reuse.
    wait_until(lambda: rss_mb(proxy) < before + 10, 10, f"RSS back under {before + 10:.0f} MB")
    assert healthy(proxy)


def test_slow_body_that_keeps_coming_is_not_timed_out(proxy, upstream):
    body = HELLO
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as conn:
        conn.sendall(CHAT_HEAD + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
        for piece in (body[:10], body[10:30], body[30:50], body[50:]):
            time.sleep(READ_TIMEOUT_S * 0.6)  # 2.4 s in all, never silent for the timeout
            conn.sendall(piece)
        answer = answer_of(conn)
    assert answer is not None and answer.startswith(b"HTTP/1.1 200")


def test_answer_slower_than_the_read_timeout_is_not_cut(proxy, upstream):
    upstream.script(Reply(delay_s=READ_TIMEOUT_S * 1.5))
    response = httpx.post(f"{proxy.url}/v1/chat/completions", content=HELLO, timeout=10)
    assert response.status_code == 200


KEY = "sk-tr-web-0123456789abcdef"


@pytest.fixture(scope="module")
def keyed_router(
    upstream_server: FakeOpenAIUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningRouter]:
    policy = two_model_policy(upstream_server.base_url, keys=[key(KEY, "web", team="web")])
    with RunningRouter(write_policy(tmp_path_factory.mktemp("keyed"), policy)) as running:
        yield running


@pytest.mark.parametrize("host", [b"x/healthz?", b"x/healthz#", b"x/livez?a=", b"evil/../healthz"])
@pytest.mark.parametrize(
    "request_line", [b"GET /v1/models HTTP/1.1", b"GET /metrics HTTP/1.1", b"POST /v1/chat/completions HTTP/1.1"]
)
def test_auth_reads_the_asgi_path_not_a_url_rebuilt_from_the_host_header(keyed_router, upstream, host, request_line):
    """RELIABILITY.md A7: Starlette's "BadHost" pattern makes ``request.url.path`` read
    ``/healthz`` (public) for a request to a key-protected path."""
    body = HELLO if request_line.startswith(b"POST") else b""
    request = (
        request_line
        + b"\r\nHost: "
        + host
        + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        + body
    )
    answer = send_raw(keyed_router.port, request)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert b'"code":"invalid_api_key"' in answer
    assert upstream.requests == []
    with_key = send_raw(
        keyed_router.port, request.replace(b"\r\n\r\n", b"\r\nAuthorization: Bearer " + KEY.encode() + b"\r\n\r\n", 1)
    )
    assert not with_key.startswith(b"HTTP/1.1 401")
