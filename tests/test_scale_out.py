"""Two `router serve` replicas behind Debian's nginx on loopback, sharing one Redis:
traffic is served by both, a budget holds across them, and a policy edit reaches both."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.fakes import FakeOpenAIUpstream
from tests.processes import NginxBalancer, RedisServer, RouterProcess, wait_until
from tests.test_shared_state import BUDGET_KEY, LIMITED_KEY, PROMPT_TOKENS, ROOM_FOR, shared_policy

HELLO = [{"role": "user", "content": "hi"}]


@pytest.mark.slow
def test_two_replicas_behind_nginx_share_traffic_budget_and_policy(tmp_path):
    policy = tmp_path / "policy.yaml"
    with FakeOpenAIUpstream(usage=(PROMPT_TOKENS, 5, 0)) as upstream, RedisServer() as redis:
        policy.write_text(shared_policy(upstream.base_url, rpm=100_000))
        env = {"ROUTER_REDIS_URL": redis.url, "ROUTER_REPLICAS": "2", "ROUTER_LOG_LEVEL": "info"}
        replicas = [RouterProcess(policy, env=env).start(), RouterProcess(policy, env=env).start()]
        try:
            with NginxBalancer(tmp_path / "nginx", [r.port for r in replicas]) as nginx:
                auth = {"authorization": f"Bearer {LIMITED_KEY}"}
                with httpx.Client(base_url=nginx.url, headers=auth, timeout=10) as http:
                    plain = [http.post("/v1/chat/completions", json={"messages": HELLO}) for _ in range(20)]
                    with http.stream(
                        "POST", "/v1/chat/completions", json={"messages": HELLO, "stream": True}
                    ) as response:
                        streamed = response.read().decode()

                with ThreadPoolExecutor(max_workers=30) as pool:
                    budgeted = list(
                        pool.map(
                            lambda _: httpx.post(
                                f"{nginx.url}/v1/chat/completions",
                                json={"messages": HELLO},
                                headers={"authorization": f"Bearer {BUDGET_KEY}"},
                                timeout=10,
                            ),
                            range(30),
                        )
                    )

                edited = policy.read_text().replace(
                    "routes: {standard: {tier: standard}}",
                    "routes: {standard: {tier: standard}, everyday: {tier: standard}}",
                )
                temporary = tmp_path / "policy.tmp"
                temporary.write_text(edited)
                os.replace(temporary, policy)
                for replica in replicas:
                    wait_until(
                        lambda r=replica: "everyday" in _model_ids(r.url, auth), 5, f"replica {replica.port} to reload"
                    )
                through_nginx = httpx.post(
                    f"{nginx.url}/v1/chat/completions",
                    json={"model": "everyday", "messages": HELLO},
                    headers=auth,
                    timeout=10,
                )
        finally:
            for replica in replicas:
                replica.stop()
    assert all(r.status_code == 200 for r in plain)
    assert streamed.endswith("data: [DONE]\n\n")
    served = [replica.logs().count('"logger": "router.access"') for replica in replicas]
    assert all(count >= 3 for count in served), served  # both replicas took traffic
    statuses = [r.status_code for r in budgeted]
    assert statuses.count(200) == ROOM_FOR and statuses.count(429) == 30 - ROOM_FOR
    assert through_nginx.status_code == 200 and through_nginx.headers["x-router-route"] == "everyday"


def _model_ids(url: str, headers: dict[str, str]) -> set[str]:
    return {m["id"] for m in httpx.get(f"{url}/v1/models", headers=headers, timeout=5).json()["data"]}
