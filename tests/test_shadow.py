"""Shadow evaluation end to end: the official SDK against the real proxy, three fake OpenAI
upstreams (the cheap model, the reference, the judge; the judge's replies are scripted JSON)."""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
import yaml

from router.budgets import scope
from router.policy.model import Budget
from router.shadow.evaluator import sampled
from router.state.redis_store import RedisStateStore
from tests.fakes import FakeOpenAIUpstream
from tests.fakes.openai_upstream import Reply
from tests.harness import RunningRouter, metric_sum, scrape, write_policy
from tests.policies import key, model, policy, provider
from tests.processes import RedisServer

ADMIN = "sk-admin-shadow"
CLIENT = "sk-client-shadow"
QUESTION = "What is the capital of Australia? (secret-prompt-marker)"
CHEAP_ANSWER = "Canberra is the capital."
REFERENCE_ANSWER = "The capital of Australia is Canberra."


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[FakeOpenAIUpstream, FakeOpenAIUpstream, FakeOpenAIUpstream]]:
    with FakeOpenAIUpstream() as cheap, FakeOpenAIUpstream() as reference, FakeOpenAIUpstream() as judge:
        yield cheap, reference, judge


@pytest.fixture()
def cheap(servers: tuple[FakeOpenAIUpstream, ...]) -> FakeOpenAIUpstream:
    servers[0].reset()
    return servers[0]


@pytest.fixture()
def reference(servers: tuple[FakeOpenAIUpstream, ...]) -> FakeOpenAIUpstream:
    servers[1].reset()
    return servers[1]


@pytest.fixture()
def judge(servers: tuple[FakeOpenAIUpstream, ...]) -> FakeOpenAIUpstream:
    servers[2].reset()
    return servers[2]


def shadow_policy(
    cheap: FakeOpenAIUpstream,
    reference: FakeOpenAIUpstream,
    judge: FakeOpenAIUpstream,
    *,
    shadow: dict[str, Any] | None = None,
    keys: list[dict[str, Any]] | None = None,
) -> str:
    text = policy(
        providers={
            "cheap": provider(cheap.base_url),
            "ref": provider(reference.base_url),
            "judge": provider(judge.base_url),
        },
        models={
            "cheap-model": model("cheap", "gpt-4o-mini", "standard", price=(0.15, 0.6)),
            "ref-model": model("ref", "gpt-4o", "frontier", price=(2.5, 10)),
            "judge-model": model("judge", "gpt-4.1-nano", "frontier", price=(5, 15), capabilities=["json_schema"]),
        },
        tiers=["frontier", "standard"],
        routes={"standard": {"tier": "standard"}, "frontier": {"tier": "frontier"}},
        keys=keys or (),
        ttft_timeout_s=5,
        timeout_s=10,
    )
    document = yaml.safe_load(text)
    if shadow is not None:
        rule = {
            "route": "standard",
            "sample": 1.0,
            "reference": "frontier",
            "judge": "judge-model",
            "budget": {"usd": 10, "per": "day"},
            **shadow,
        }
        document["shadow"] = [rule]
    return yaml.safe_dump(document, sort_keys=False)


def start(tmp_path: Path, text: str, **settings: object) -> RunningRouter:
    return RunningRouter(write_policy(tmp_path, text), shadow_workers=1, **settings)


def sdk(router: RunningRouter, secret: str = "sk-none") -> openai.OpenAI:
    return openai.OpenAI(base_url=router.base_url, api_key=secret, max_retries=0, _strict_response_validation=True)


def verdict(winner: str, reason: str = "one line") -> Reply:
    return Reply(content=orjson.dumps({"winner": winner, "reason": reason}).decode())


def ask(client: openai.OpenAI, **extra: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="standard", messages=[{"role": "user", "content": QUESTION}], **extra
    )


def quality(router: RunningRouter, secret: str | None = None) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {secret}"} if secret else {}
    response = httpx.get(f"{router.url}/v1/router/quality", headers=headers, timeout=5)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wait_for(router: RunningRouter, predicate: Any, secret: str | None = None, timeout_s: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        report = quality(router, secret)
        if predicate(report):
            return report
        if time.monotonic() > deadline:
            raise AssertionError(f"shadow report never matched: {report}")
        time.sleep(0.05)


def judged(count: int) -> Any:
    return lambda report: sum(row["judged"] for row in report["data"]) >= count


def independent_wilson(successes: int, n: int) -> tuple[float, float]:
    """The Wilson bounds as the roots of (p̂ − p)² = z² p (1 − p) / n, solved as a quadratic in p."""
    z = statistics.NormalDist().inv_cdf(0.975)
    p_hat = successes / n
    a = 1 + z * z / n
    b = -(2 * p_hat + z * z / n)
    c = p_hat * p_hat
    root = math.sqrt(b * b - 4 * a * c)
    return (-b - root) / (2 * a), (-b + root) / (2 * a)


def test_sampled_answers_are_judged_in_both_orders_and_reported_with_a_wilson_interval(
    tmp_path: Path, cheap: FakeOpenAIUpstream, reference: FakeOpenAIUpstream, judge: FakeOpenAIUpstream
) -> None:
    cheap.script(*[Reply(content=CHEAP_ANSWER)] * 3)
    reference.script(*[Reply(content=REFERENCE_ANSWER)] * 3)
    # better (cheap wins as A and as B), worse (reference wins both ways), same (a tie both ways)
    judge.script(verdict("A"), verdict("B"), verdict("B"), verdict("A"), verdict("tie"), verdict("tie"))
    with start(tmp_path, shadow_policy(cheap, reference, judge, shadow={})) as router:
        client = sdk(router)
        for count in (1, 2, 3):
            ask(client)
            report = wait_for(router, judged(count))
        samples = scrape(router.url)

    first, second = (r.json["messages"][1]["content"] for r in judge.chat_requests[:2])
    assert first.index(CHEAP_ANSWER) < first.index(REFERENCE_ANSWER)  # the cheaper answer as A
    assert second.index(REFERENCE_ANSWER) < second.index(CHEAP_ANSWER)  # then as B
    assert judge.chat_requests[0].json["response_format"]["type"] == "json_schema"
    assert "cheap-model" not in first and "ref-model" not in first  # blind

    [row] = report["data"]
    assert (row["route"], row["model"], row["reference_model"], row["judged"]) == (
        "standard",
        "cheap-model",
        "ref-model",
        3,
    )
    assert row["verdicts"] == {"better": 1, "same": 1, "worse": 1, "error": 0}
    assert row["held_share"] == pytest.approx(2 / 3)
    assert row["held_interval_95"] == pytest.approx(independent_wilson(2, 3), abs=1e-12)
    for name in ("better", "same", "worse"):
        assert (
            metric_sum(
                samples,
                "router_shadow_verdicts_total",
                route="standard",
                model="cheap-model",
                reference_model="ref-model",
                verdict=name,
            )
            == 1
        )
    # reference 20×2.5 + 5×10, each judge call 20×5 + 5×15 (the fake's usage), per job, in USD
    assert metric_sum(samples, "router_shadow_cost_usd_total", route="standard") == pytest.approx(3 * 450e-6)
    assert report["spend"]["standard"]["usd"] == pytest.approx(3 * 450e-6)
    assert metric_sum(samples, "router_requests_total") == 3  # the shadow calls are not client requests


def test_a_streamed_answer_is_judged_after_its_end(
    tmp_path: Path, cheap: FakeOpenAIUpstream, reference: FakeOpenAIUpstream, judge: FakeOpenAIUpstream
) -> None:
    cheap.script(Reply(content=CHEAP_ANSWER))
    reference.script(Reply(content=REFERENCE_ANSWER))
    judge.script(verdict("A"), verdict("B"))
    with start(tmp_path, shadow_policy(cheap, reference, judge, shadow={})) as router:
        stream = sdk(router).chat.completions.create(
            model="standard", messages=[{"role": "user", "content": QUESTION}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == CHEAP_ANSWER
        [row] = wait_for(router, judged(1))["data"]
    assert row["verdicts"]["better"] == 1
    assert CHEAP_ANSWER in judge.chat_requests[0].json["messages"][1]["content"]
    assert reference.chat_requests[0].json.get("stream") is None  # the reference answers whole


def test_an_inconsistent_judge_pair_counts_as_same(
    tmp_path: Path, cheap: FakeOpenAIUpstream, reference: FakeOpenAIUpstream, judge: FakeOpenAIUpstream
) -> None:
    judge.script(verdict("A"), verdict("A"))  # position bias: whatever comes first wins
    with start(tmp_path, shadow_policy(cheap, reference, judge, shadow={})) as router:
        ask(sdk(router))
        [row] = wait_for(router, judged(1))["data"]
    assert row["verdicts"] == {"better": 0, "same": 1, "worse": 0, "error": 0}


def test_a_judge_reply_that_does_not_parse_is_an_error(
    tmp_path: Path, cheap: FakeOpenAIUpstream, reference: FakeOpenAIUpstream, judge: FakeOpenAIUpstream
) -> None:
    judge.script(Reply(content="I think A is better."), verdict("B"))
    with start(tmp_path, shadow_policy(cheap, reference, judge, shadow={})) as router:
        ask(sdk(router))
        [row] = wait_for(router, judged(1))["data"]
        samples = scrape(router.url)
    assert row["verdicts"] == {"better": 0, "same": 0, "worse": 0, "error": 1}
    assert row["held_share"] is None and row["held_interval_95"] is None
    assert metric_sum(samples, "router_shadow_verdicts_total", verdict="error") == 1


def test_the_clients_answer_cost_and_budget_are_the_same_with_shadowing_on(
    tmp_path: Path, cheap: FakeOpenAIUpstream, reference: FakeOpenAIUpstream, judge: FakeOpenAIUpstream
) -> None:
    keys = [
        key(CLIENT, "web-app", team="web", budget={"usd": 1, "per": "day"}),
        key(ADMIN, "ops", team="ops", admin=True),
    ]
    seen = []
    for shadow in (None, {}):
        cheap.script(Reply(content=CHEAP_ANSWER))
        judge.script(verdict("A"), verdict("B"))
        directory = tmp_path / ("on" if shadow is not None else "off")
        directory.mkdir()
        with start(directory, shadow_policy(cheap, reference, judge, shadow=shadow, keys=keys)) as router:
            raw = ask(sdk(router, CLIENT))
            if shadow is not None:
                wait_for(router, judged(1), ADMIN)
            store = router.app.state.runtime.store
            spent = asyncio.run(store.budget_usage(scope("key:web-app", Budget(1, "day")))).spent_micros
            shadow_spent = asyncio.run(store.budget_usage(scope("shadow:standard", Budget(10, "day")))).spent_micros
        body = raw.parse()
        seen.append((body.choices[0].message.content, body.usage, raw.headers["x-router-cost-usd"], spent))
        assert shadow_spent == (450 if shadow is not None else 0)  # the shadow's own scope pays
    assert seen[0] == seen[1]
    assert seen[0][3] == math.ceil(float(seen[0][2]) * 1e6 - 1e-9)


def test_quality_report_needs_an_admin_key_when_keys_are_configured(
    tmp_path: Path, cheap: FakeOpenAIUpstream, reference: FakeOpenAIUpstream, judge: FakeOpenAIUpstream
) -> None:
    keys = [key(CLIENT, "web-app", team="web"), key(ADMIN, "ops", team="ops", admin=True)]
    with start(tmp_path, shadow_policy(cheap, reference, judge, shadow={}, keys=keys)) as router:
        refused = httpx.get(f"{router.url}/v1/router/quality", headers={"authorization": f"Bearer {CLIENT}"}, timeout=5)
        assert refused.status_code == 403
        assert "admin key" in refused.json()["error"]["message"]
        assert quality(router, ADMIN)["data"] == []


def test_a_full_queue_drops_and_counts(
    tmp_path: Path, cheap: FakeOpenAIUpstream, reference: FakeOpenAIUpstream, judge: FakeOpenAIUpstream
) -> None:
    reference.script(Reply(delay_s=1.0), Reply(delay_s=1.0))  # the one worker is busy with the first
    with start(tmp_path, shadow_policy(cheap, reference, judge, shadow={}), shadow_queue_size=1) as router:
        client = sdk(router)
        for _ in range(4):
            ask(client)
        dropped = metric_sum(scrape(router.url), "router_shadow_dropped_total", reason="queue_full")
        report = quality(router)
    assert dropped >= 2  # one job running, one queued, the rest dropped
    assert report["dropped"]["queue_full"] == dropped


def test_the_shadow_budget_stops_shadowing_once_spent(
    tmp_path: Path, cheap: FakeOpenAIUpstream, reference: FakeOpenAIUpstream, judge: FakeOpenAIUpstream
) -> None:
    cap_usd = 0.006  # a judge call reserves about $0.005 (its prompt and 256 output tokens at 5 and 15)
    judge.script(*[verdict("tie")] * 20)
    text = shadow_policy(cheap, reference, judge, shadow={"budget": {"usd": cap_usd, "per": "day"}})
    with start(tmp_path, text) as router:
        client = sdk(router)
        for _ in range(5):
            ask(client, max_tokens=10)
            time.sleep(0.2)
        report = wait_for(router, lambda r: r["dropped"]["budget"] >= 1)
        for _ in range(2):
            ask(client, max_tokens=10)
        time.sleep(0.5)
        final = quality(router)
        store = router.app.state.runtime.store
        usage = asyncio.run(store.budget_usage(scope("shadow:standard", Budget(cap_usd, "day"))))
    judged_before = sum(row["judged"] for row in report["data"])
    assert judged_before >= 1
    assert sum(row["judged"] for row in final["data"]) == judged_before  # nothing judged once spent
    assert final["dropped"]["budget"] >= 3
    assert usage.spent_micros + usage.reserved_micros <= cap_usd * 1e6
    assert usage.spent_micros == pytest.approx(final["spend"]["standard"]["usd"] * 1e6, abs=1)


@pytest.mark.parametrize("keep", [False, True])
def test_the_verdict_log_holds_prompts_and_answers_only_with_keep_prompts(
    tmp_path: Path, cheap: FakeOpenAIUpstream, reference: FakeOpenAIUpstream, judge: FakeOpenAIUpstream, keep: bool
) -> None:
    cheap.script(Reply(content=CHEAP_ANSWER))
    reference.script(Reply(content=REFERENCE_ANSWER))
    judge.script(verdict("A"), verdict("B", "cheap one is terser"))
    log = tmp_path / "verdicts.jsonl"
    text = shadow_policy(cheap, reference, judge, shadow={"keep_prompts": keep})
    with start(tmp_path, text, shadow_log=log) as router:
        raw = ask(sdk(router))
        wait_for(router, judged(1))
        deadline = time.monotonic() + 5
        while not log.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        samples = "\n".join(k for k in scrape(router.url) if k.startswith("router_shadow"))
    [entry] = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    assert entry["request_id"] == raw.headers["x-request-id"]
    assert (entry["route"], entry["model"], entry["reference_model"], entry["verdict"]) == (
        "standard",
        "cheap-model",
        "ref-model",
        "better",
    )
    assert entry["reason"] == "cheap one is terser"
    content = log.read_text()
    for secret in ("secret-prompt-marker", CHEAP_ANSWER, REFERENCE_ANSWER):
        assert (secret in content) is keep
        assert secret not in samples
    assert ("messages" in entry) is keep


def test_a_tool_call_answer_is_shown_to_the_judge_as_the_call_it_makes(
    tmp_path: Path, cheap: FakeOpenAIUpstream, reference: FakeOpenAIUpstream, judge: FakeOpenAIUpstream
) -> None:
    cheap.script(Reply(tool_call=True, tool_arguments='{"city": "Canberra",  "units":"c"}'))
    reference.script(Reply(tool_call=True, tool_arguments='{"units": "c", "city": "Canberra"}'))
    judge.script(verdict("tie"), verdict("tie"))
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    with start(tmp_path, shadow_policy(cheap, reference, judge, shadow={})) as router:
        ask(sdk(router), tools=tools)
        [row] = wait_for(router, judged(1))["data"]
    shown = judge.chat_requests[0].json["messages"][1]["content"]
    call = 'calls get_weather({"city":"Canberra","units":"c"})'
    assert shown.count(call) == 2  # both answers, the same call whatever the argument order
    assert "[tools offered] get_weather" in shown
    assert reference.chat_requests[0].json["tools"] == tools
    assert row["verdicts"]["same"] == 1


def test_shutdown_drops_what_it_cannot_drain_in_time_and_counts_it(
    tmp_path: Path, cheap: FakeOpenAIUpstream, reference: FakeOpenAIUpstream, judge: FakeOpenAIUpstream
) -> None:
    reference.script(*[Reply(delay_s=3.0)] * 3)
    router = start(tmp_path, shadow_policy(cheap, reference, judge, shadow={}), shadow_drain_s=0.3)
    with router:
        client = sdk(router)
        for _ in range(3):
            ask(client)
        began = time.monotonic()
    assert time.monotonic() - began < 2.5  # not the reference's 3 s
    shadow = router.app.state.runtime.gateway.shadow
    assert shadow.dropped["shutdown"] == 3  # one running, two queued
    assert shadow.tallies == {}


def test_sampling_takes_the_share_asked_for_and_the_same_request_always_the_same_way() -> None:
    ids = [f"req-{i}" for i in range(4000)]
    taken = sum(sampled(i, 0.1) for i in ids)
    # 0.1 × 4000 = 400, standard deviation √(4000 × 0.1 × 0.9) ≈ 19: five of them either side
    assert 305 <= taken <= 495
    assert [sampled(i, 0.1) for i in ids[:100]] == [sampled(i, 0.1) for i in ids[:100]]
    assert all(sampled(i, 1.0) for i in ids[:100])


def test_the_shadow_budget_holds_across_two_replicas_sharing_redis(
    tmp_path: Path, cheap: FakeOpenAIUpstream, reference: FakeOpenAIUpstream, judge: FakeOpenAIUpstream
) -> None:
    cap_usd = 0.006
    judge.script(*[verdict("tie")] * 40)
    text = shadow_policy(cheap, reference, judge, shadow={"budget": {"usd": cap_usd, "per": "day"}})
    with RedisServer() as redis:
        with start(tmp_path, text, redis_url=redis.url) as a, start(tmp_path, text, redis_url=redis.url) as b:
            clients = (sdk(a), sdk(b))
            for index in range(8):
                ask(clients[index % 2], max_tokens=10)
                time.sleep(0.2)
            reports = [wait_for(router, lambda r: r["dropped"]["budget"] >= 1) for router in (a, b)]

        async def usage() -> Any:
            store = RedisStateStore(redis.url)
            try:
                return await store.budget_usage(scope("shadow:standard", Budget(cap_usd, "day")))
            finally:
                await store.aclose()

        shared = asyncio.run(usage())
    judged_total = sum(row["judged"] for report in reports for row in report["data"])
    spent_total = sum(report["spend"]["standard"]["usd"] for report in reports)
    assert judged_total >= 1
    assert shared.reserved_micros == 0
    assert shared.spent_micros <= cap_usd * 1e6  # never past the cap, whichever replica spent it
    assert shared.spent_micros == pytest.approx(spent_total * 1e6, abs=3 * judged_total)  # both replicas' spend
