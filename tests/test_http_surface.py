"""The HTTP surface beyond the SDK: raw bodies, headers, health, request ids."""

from __future__ import annotations

import httpx
import pytest

from tests.processes import send_raw

HELLO = {"model": "standard", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture()
def http(router, upstream):
    with httpx.Client(base_url=router.url, timeout=10) as client:
        yield client


def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


def test_bad_json_is_400(http):
    response = http.post(
        "/v1/chat/completions",
        content=b'{"model": "standard", "messages": [',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert "could not parse the JSON body" in error_of(response)["message"]


def test_json_that_is_not_an_object_is_400(http):
    response = http.post("/v1/chat/completions", json=[1, 2])
    assert response.status_code == 400 and "JSON object" in error_of(response)["message"]


def test_deeply_nested_json_is_400_not_500(http, upstream):
    # 300 levels: orjson parses it (its limit is 1024) but cannot write it back (254), so
    # only the router's own depth guard stands between this body and a 500
    nested = b'{"a":' * 300 + b"1" + b"}" * 300
    body = b'{"model": "standard", "messages": [{"role": "user", "content": "hi"}], "metadata": ' + nested + b"}"
    response = http.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "nesting_too_deep" and error["param"] == "metadata"
    assert upstream.requests == []


def test_invalid_utf8_is_400(http):
    response = http.post(
        "/v1/chat/completions", content=b'{"model": "\xff\xfe"}', headers={"content-type": "application/json"}
    )
    assert response.status_code == 400


def test_wrong_content_type_is_415(http):
    response = http.post(
        "/v1/chat/completions", content=b"model=standard", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 415
    assert "application/json" in error_of(response)["message"]


def test_missing_messages_names_the_parameter(http):
    response = http.post("/v1/chat/completions", json={"model": "standard"})
    assert response.status_code == 400
    error = error_of(response)
    assert error["param"] == "messages" and error["code"] == "missing_required_parameter"


@pytest.mark.parametrize(
    ("field", "value", "param"),
    [
        ("n", 500, "n"),
        ("n", "2", "n"),
        ("max_tokens", 0, "max_tokens"),
        ("stream", "yes", "stream"),
        ("model", 5, "model"),
        (
            "tools",
            [{"type": "function", "function": {"name": f"t{i}", "parameters": {}}} for i in range(2000)],
            "tools",
        ),
    ],
)
def test_bad_fields_name_the_parameter(http, field, value, param):
    response = http.post("/v1/chat/completions", json={**HELLO, field: value})
    assert response.status_code == 400
    assert error_of(response)["param"] == param


def test_declared_body_over_the_limit_is_413_before_reading(router):
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {5 * 1024 * 1024}\r\n\r\n".encode()
        + b"{"
    )
    answer = send_raw(router.port, request, until=b"}}")
    assert answer.startswith(b"HTTP/1.1 413")
    assert b"ROUTER_MAX_BODY_MB" in answer


def test_chunked_body_over_the_limit_is_413(http, upstream):
    def body():
        yield b'{"model": "standard", "messages": [{"role": "user", "content": "'
        for _ in range(20):
            yield b"x" * 100_000
        yield b'"}]}'

    response = http.post("/v1/chat/completions", content=body(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert upstream.requests == []


def test_request_id_is_kept_when_given_and_made_when_not(http):
    given = http.post("/v1/chat/completions", json=HELLO, headers={"x-request-id": "trace-123"})
    assert given.headers["x-request-id"] == "trace-123" and given.headers["request-id"] == "trace-123"
    made = http.post("/v1/chat/completions", json=HELLO)
    assert made.headers["x-request-id"].startswith("req_")
    unsafe = http.post("/v1/chat/completions", json=HELLO, headers={"x-request-id": "a b<script>"})
    assert unsafe.headers["x-request-id"].startswith("req_")


def test_request_id_reaches_the_upstream_as_x_client_request_id(http, upstream):
    response = http.post("/v1/chat/completions", json=HELLO, headers={"x-request-id": "trace-456"})
    assert response.status_code == 200
    assert upstream.last_request.headers["x-client-request-id"] == "trace-456"
    assert "x-request-id" not in upstream.last_request.headers


def test_request_ids_are_on_errors_and_unknown_paths_too(http):
    for response in (http.post("/v1/chat/completions", json={}), http.get("/v2/nothing")):
        assert response.headers["x-request-id"].startswith("req_")
        error_of(response)
    assert http.get("/v2/nothing").status_code == 404


HOP_BY_HOP = ("connection", "keep-alive", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade")


def test_client_auth_and_hop_by_hop_headers_never_reach_upstream(router, upstream):
    """Every hop-by-hop header of RFC 9110 §7.6.1, a header the client's Connection nominates
    (x-custom), its credentials and cookies: none is forwarded. Raw bytes, since no client
    sends all of them (the body is chunked to carry Transfer-Encoding and Trailer)."""
    body = b'{"model": "standard", "messages": [{"role": "user", "content": "hi"}]}'
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\n"
        b"Authorization: Bearer sk-client-canary\r\n"
        b"Cookie: a=b\r\n"
        b"Connection: close, x-custom, keep-alive, te, trailer\r\n"
        b"X-Custom: nominated-by-connection\r\n"
        b"Keep-Alive: timeout=5, max=100\r\n"
        b"Proxy-Authorization: Basic cHJveHk6c2VjcmV0\r\n"
        b"TE: trailers\r\n"
        b"Trailer: X-Checksum\r\n"
        b"Upgrade: h2c\r\n"
        b"Transfer-Encoding: chunked\r\n"
        b"\r\n" + b"%x\r\n%s\r\n0\r\nX-Checksum: 1\r\n\r\n" % (len(body), body)
    )
    answer = send_raw(router.port, request)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    sent = upstream.last_request.headers
    assert sent["authorization"] == "Bearer sk-upstream-secret-1"
    assert "cookie" not in sent and "x-custom" not in sent and "x-checksum" not in sent
    assert not set(HOP_BY_HOP) & set(sent), sent
    assert sent["content-length"] == str(len(upstream.last_request.body))  # the proxy's own framing
    assert "sk-client-canary" not in str(sent) and "cHJveHk6c2VjcmV0" not in str(sent)


def test_health_and_readiness(http):
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/livez").status_code == 200
    ready = http.get("/readyz")
    assert ready.status_code == 200 and len(ready.json()["policy_sha256"]) == 64


def test_explain_returns_the_ranked_decision_without_calling_upstream(http, upstream):
    response = http.post(
        "/v1/router/explain",
        json={**HELLO, "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
    )
    decision = response.json()
    assert response.status_code == 200
    assert [c["model"] for c in decision["candidates"]] == ["cheap-model", "pricey-model"]
    assert decision["candidates"][0]["estimated_cost_usd"] < decision["candidates"][1]["estimated_cost_usd"]
    assert decision["tier"] == "standard" and decision["route"] == "standard"
    assert upstream.requests == []
    assert "sk-upstream" not in response.text


def test_explain_rejects_what_chat_would_reject(http):
    assert http.post("/v1/router/explain", json={"model": "nope", "messages": HELLO["messages"]}).status_code == 404


def test_tier_override_header(http, upstream):
    response = http.post("/v1/chat/completions", json=HELLO, headers={"x-router-tier": "frontier"})
    assert response.headers["x-router-model"] == "pricey-model"
    assert http.post("/v1/chat/completions", json=HELLO, headers={"x-router-tier": "gold"}).status_code == 400


@pytest.mark.parametrize(
    "headers",
    [b"X-Big: " + b"a" * 40_000 + b"\r\n", b"".join(b"X-H%d: v\r\n" % i for i in range(150))],
    ids=["huge-header", "many-headers"],
)
def test_oversized_headers_are_431(router, headers):
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n"
        + headers
        + b"\r\n{}"
    )
    answer = send_raw(router.port, request)
    assert answer.startswith(b"HTTP/1.1 431")
    assert b"request_headers_too_large" in answer
