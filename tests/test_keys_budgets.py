"""Client keys, budgets and rate limits through the HTTP surface (in-process state).
The same flows across two processes sharing Redis are in test_shared_state.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import httpx
import openai
import pytest

from router.auth import digest_of
from tests.fakes import ErrorReply, Hang
from tests.harness import RunningRouter, metric_sum, scrape, write_policy
from tests.processes import RedisServer, send_raw

HELLO = [{"role": "user", "content": "hi"}]
WEB_KEY = "sk-tr-web-0123456789abcdef"
ADMIN_KEY = "sk-tr-ops-0123456789abcdef"
TINY_KEY = "sk-tr-tiny-0123456789abcdef"
CANARY_KEY = "sk-tr-canary-ZZZ-0123456789"


def keyed_policy(upstream_url: str, budget_usd: float = 1.0, rpm: int = 1000, cache: str = "") -> str:
    return f"""
    version: 1
    tiers: [frontier, standard]
    providers:
      primary: {{type: openai, base_url: "{upstream_url}", api_key: sk-upstream-secret-1}}
    models:
      cheap-model:  {{provider: primary, upstream: gpt-4o-mini, tier: standard, price: {{input: 1000, output: 1000}}, context_window: 128000}}
      pricey-model: {{provider: primary, upstream: gpt-4o, tier: frontier, price: {{input: 2000, output: 2000}}, context_window: 128000}}
    routes:
      standard: {{tier: standard{cache}}}
      frontier: {{tier: frontier}}
    keys:
      - {{hash: "sha256:{digest_of(WEB_KEY)}", name: web-app, team: web, routes: [standard], budget: {{usd: {budget_usd}, per: day}}, limits: {{rpm: {rpm}, tpm: 1000000}}}}
      - {{hash: "sha256:{digest_of(ADMIN_KEY)}", name: ops, team: platform, allow_tier_override: true, admin: true}}
      - {{hash: "sha256:{digest_of(TINY_KEY)}", name: tiny, team: web, limits: {{tpm: 50}}}}
    teams:
      platform: {{budget: {{usd: 1000, per: month}}}}
    defaults: {{route: standard, retries: 0, expected_output_tokens: 10, max_output_tokens: 10, baseline_model: pricey-model}}
    """


@pytest.fixture()
def keyed(tmp_path, upstream):
    with RunningRouter(write_policy(tmp_path, keyed_policy(upstream.base_url))) as router:
        yield router


def client(router: RunningRouter, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=router.base_url, api_key=key, max_retries=0)


class TestKeys:
    def test_a_valid_key_is_served(self, keyed):
        assert client(keyed, WEB_KEY).chat.completions.create(model="standard", messages=HELLO).model == "cheap-model"

    @pytest.mark.parametrize("key", ["sk-tr-wrong", WEB_KEY + "x", WEB_KEY.upper()])
    def test_a_wrong_key_is_401(self, keyed, upstream, key):
        with pytest.raises(openai.AuthenticationError) as info:
            client(keyed, key).chat.completions.create(model="standard", messages=HELLO)
        assert info.value.code == "invalid_api_key"
        assert upstream.requests == []

    @pytest.mark.parametrize(
        "header",
        [
            None,
            "",
            "Bearer",
            "Bearer ",
            "Basic dXNlcjpwYXNz",
            f'Bearer "{WEB_KEY}"',
            "Bearer " + "x" * 10_000,
            "Bearer ключ",
            f"Bearer {WEB_KEY}\x00",
            f"bearer  {WEB_KEY}",
        ],
        ids=[
            "missing",
            "empty",
            "scheme-only",
            "empty-token",
            "basic",
            "quoted",
            "10kb",
            "unicode",
            "nul",
            "double-space",
        ],
    )
    def test_malformed_authorization_is_401_with_a_constant_body(self, keyed, header):
        status, body = raw_post(
            keyed.port, "/v1/chat/completions", b'{"messages": []}', None if header is None else header.encode("utf-8")
        )
        if status == 400:  # the HTTP parser itself refuses a NUL byte before any handler runs
            assert "\x00" in header
            return
        assert status == 401
        assert json.loads(body)["error"]["message"].startswith("Invalid or missing API key")

    def test_every_route_except_health_needs_a_key(self, keyed):
        declared = {route.path: route.methods - {"HEAD"} for route in keyed.app.routes}
        assert {
            "/v1/chat/completions",
            "/v1/embeddings",
            "/v1/models",
            "/v1/router/explain",
            "/metrics",
            "/admin/reload",
            "/healthz",
            "/readyz",
        } <= set(declared)
        checked = 0
        with httpx.Client(base_url=keyed.url) as http:
            for path, methods in declared.items():
                for method in methods:
                    response = http.request(method.upper(), path, json={"messages": HELLO})
                    if path in ("/healthz", "/livez", "/readyz"):
                        assert response.status_code == 200, path
                    else:
                        assert response.status_code == 401, (method, path)
                    checked += 1
            assert http.get("/no/such/path").status_code == 401
        assert checked >= 8

    def test_a_key_may_only_use_its_routes(self, keyed):
        with pytest.raises(openai.PermissionDeniedError) as info:
            client(keyed, WEB_KEY).chat.completions.create(model="frontier", messages=HELLO)
        assert info.value.code == "model_not_allowed"
        assert [m.id for m in client(keyed, WEB_KEY).models.list()] == ["standard"]

    def test_tier_override_allowed_and_refused(self, keyed):
        allowed = client(keyed, ADMIN_KEY).chat.completions.with_raw_response.create(
            model="standard", messages=HELLO, extra_headers={"x-router-tier": "frontier"}
        )
        assert allowed.headers["x-router-model"] == "pricey-model"
        with pytest.raises(openai.PermissionDeniedError) as info:
            client(keyed, WEB_KEY).chat.completions.create(
                model="standard", messages=HELLO, extra_headers={"x-router-tier": "frontier"}
            )
        assert info.value.code == "tier_override_not_allowed"

    def test_team_shows_in_metrics_and_never_the_key(self, keyed):
        client(keyed, WEB_KEY).chat.completions.create(model="standard", messages=HELLO)
        text = httpx.get(f"{keyed.url}/metrics", headers={"authorization": f"Bearer {WEB_KEY}"}).text
        assert 'team="web"' in text
        assert WEB_KEY not in text and digest_of(WEB_KEY) not in text and "web-app" not in text


def test_keys_new_prints_the_key_once_and_a_hash_line():
    result = subprocess.run(
        [sys.executable, "-m", "router", "keys", "new", "--name", "web-app", "--team", "web"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    key = re.search(r"(sk-tr-\S+)", result.stdout).group(1)
    line = result.stdout.strip().splitlines()[-1]
    assert line.strip() == f'- {{hash: "sha256:{digest_of(key)}", name: web-app, team: web}}'
    assert result.stdout.count(key) == 1


@pytest.fixture(params=["memory", "redis"])
def state(request):
    """Settings for the state store: in-process, or a private real Redis."""
    if request.param == "memory":
        yield {}
        return
    with RedisServer() as redis:
        yield {"redis_url": redis.url}


class TestBudgets:
    # prices are $1000 / 1M tokens: the fake's default usage (20 in, 5 out) costs $0.025;
    # the reservation is prompt (~8 tokens) + the 10-token output cap (max_output_tokens).
    def test_exhausted_budget_is_429_insufficient_quota(self, tmp_path, upstream, state):
        with RunningRouter(write_policy(tmp_path, keyed_policy(upstream.base_url, budget_usd=0.05)), **state) as router:
            web = client(router, WEB_KEY)
            web.chat.completions.create(model="standard", messages=HELLO)
            web.chat.completions.create(model="standard", messages=HELLO)
            with pytest.raises(openai.RateLimitError) as info:
                web.chat.completions.create(model="standard", messages=HELLO)
            samples = scrape(router.url, key=ADMIN_KEY)
        assert info.value.code == "insufficient_quota"
        assert "budget of $0.05 per day is used up" in info.value.message
        assert 0 < int(info.value.response.headers["retry-after"]) <= 86400
        assert len(upstream.chat_requests) == 2
        assert metric_sum(samples, "router_budget_rejections_total", team="web") == 1

    def test_reservation_is_released_on_upstream_error(self, tmp_path, upstream, state):
        upstream.script(*[ErrorReply(500)] * 6)  # each request tries both models
        with RunningRouter(write_policy(tmp_path, keyed_policy(upstream.base_url, budget_usd=0.03)), **state) as router:
            web = client(router, WEB_KEY)
            for _ in range(3):
                with pytest.raises(openai.InternalServerError):
                    web.chat.completions.create(model="standard", messages=HELLO)
            assert web.chat.completions.create(model="standard", messages=HELLO).model == "cheap-model"

    def test_reservation_is_released_on_client_disconnect(self, tmp_path, upstream, state):
        upstream.script(Hang(10))
        with RunningRouter(write_policy(tmp_path, keyed_policy(upstream.base_url, budget_usd=0.03)), **state) as router:
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(
                    f"{router.base_url}/chat/completions",
                    json={"messages": HELLO},
                    headers={"authorization": f"Bearer {WEB_KEY}"},
                    timeout=0.5,
                )
            assert upstream.wait_for_disconnects(1, timeout=3)
            time.sleep(0.2)
            assert (
                client(router, WEB_KEY).chat.completions.create(model="standard", messages=HELLO).model == "cheap-model"
            )


class TestRateLimits:
    def test_requests_per_minute_with_openai_headers(self, tmp_path, upstream, state):
        with RunningRouter(
            write_policy(tmp_path, keyed_policy(upstream.base_url, budget_usd=100, rpm=3)), **state
        ) as router:
            web = client(router, WEB_KEY)
            first = web.chat.completions.with_raw_response.create(model="standard", messages=HELLO)
            for _ in range(2):
                web.chat.completions.create(model="standard", messages=HELLO)
            with pytest.raises(openai.RateLimitError) as info:
                web.chat.completions.create(model="standard", messages=HELLO)
            samples = scrape(router.url, key=ADMIN_KEY)
        assert first.headers["x-ratelimit-limit-requests"] == "3"
        assert first.headers["x-ratelimit-remaining-requests"] == "2"
        assert info.value.code == "rate_limit_exceeded"
        assert 1 <= int(info.value.response.headers["retry-after"]) <= 21
        assert info.value.response.headers["x-ratelimit-remaining-requests"] == "0"
        assert metric_sum(samples, "router_rate_limited_total", team="web") == 1

    def test_a_request_larger_than_the_token_limit_says_so(self, keyed):
        with pytest.raises(openai.RateLimitError) as info:
            client(keyed, TINY_KEY).chat.completions.create(
                model="standard", messages=[{"role": "user", "content": "word " * 100}]
            )
        assert "more than the key's limit of 50 tokens per minute" in info.value.message


class TestCache:
    def test_exact_match_cache_per_team_and_never_a_fallbacks_answer(self, tmp_path, upstream, state):
        policy = keyed_policy(upstream.base_url, budget_usd=100, cache=", cache: {ttl_s: 60}")
        with RunningRouter(write_policy(tmp_path, policy), **state) as router:
            web, ops = client(router, WEB_KEY), client(router, ADMIN_KEY)
            miss = web.chat.completions.with_raw_response.create(model="standard", messages=HELLO, seed=1)
            hit = web.chat.completions.with_raw_response.create(model="standard", messages=HELLO, seed=1)
            other_seed = web.chat.completions.with_raw_response.create(model="standard", messages=HELLO, seed=2)
            other_team = ops.chat.completions.with_raw_response.create(model="standard", messages=HELLO, seed=1)
            upstream.script(ErrorReply(500))
            fallback = ops.chat.completions.with_raw_response.create(model="standard", messages=HELLO, seed=9)
            after_fallback = ops.chat.completions.with_raw_response.create(model="standard", messages=HELLO, seed=9)
        assert [r.headers["x-router-cache"] for r in (miss, hit, other_seed, other_team)] == [
            "miss",
            "hit",
            "miss",
            "miss",
        ]
        assert hit.parse().choices[0].message.content == miss.parse().choices[0].message.content
        assert hit.headers["x-router-cost-usd"] == "0.00000000"
        assert fallback.headers["x-router-model"] == "pricey-model"
        assert (
            after_fallback.headers["x-router-cache"] == "miss"
            and after_fallback.headers["x-router-model"] == "cheap-model"
        )


def test_canary_key_never_appears_in_logs_metrics_errors_or_explain(keyed, upstream, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    with httpx.Client(base_url=keyed.url) as http:
        bodies = [
            http.post(
                "/v1/chat/completions", json={"messages": HELLO}, headers={"authorization": f"Bearer {CANARY_KEY}"}
            ).text,
            http.post(
                "/v1/chat/completions",
                json={"messages": HELLO, "api_key": CANARY_KEY},
                headers={"authorization": f"Bearer {ADMIN_KEY}"},
            ).text,
            http.post(
                "/v1/router/explain", json={"messages": HELLO}, headers={"authorization": f"Bearer {ADMIN_KEY}"}
            ).text,
            http.get("/v1/models", headers={"authorization": f"Bearer {ADMIN_KEY}"}).text,
            http.get("/metrics", headers={"authorization": f"Bearer {ADMIN_KEY}"}).text,
        ]
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for text in (*bodies, logged):
        for secret in (CANARY_KEY, ADMIN_KEY, WEB_KEY, digest_of(ADMIN_KEY), "sk-upstream-secret-1"):
            assert secret not in text


def raw_post(port: int, path: str, body: bytes, authorization: bytes | None) -> tuple[int, bytes]:
    """A request written byte by byte, so headers no HTTP client would send can be tried."""
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n".encode()
    if authorization is not None:
        head += b"Authorization: " + authorization + b"\r\n"
    answer = send_raw(port, head + b"\r\n" + body)
    status = int(answer.split(b" ", 2)[1])
    return status, answer.partition(b"\r\n\r\n")[2]
