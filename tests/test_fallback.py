"""First fallback: failures before the first content byte move to the next candidate."""

from __future__ import annotations

import time

import openai
import pytest

from tests.fakes import ErrorReply, Hang, RawReply, Reply
from tests.harness import RunningRouter, two_model_policy, write_policy
from tests.processes import free_port

HELLO = [{"role": "user", "content": "hi"}]


def test_500_falls_back_to_the_next_candidate(client, upstream):
    upstream.script(ErrorReply(500))
    raw = client.chat.completions.with_raw_response.create(model="standard", messages=HELLO)
    assert raw.headers["x-router-attempts"] == "2"
    assert raw.headers["x-router-model"] == "pricey-model"
    assert raw.parse().model == "pricey-model"
    assert [r.json["model"] for r in upstream.chat_requests] == ["gpt-4o-mini", "gpt-4o"]


def test_stream_500_before_first_byte_falls_back(client, upstream):
    upstream.script(ErrorReply(503))
    raw = client.chat.completions.with_raw_response.create(model="standard", messages=HELLO, stream=True)
    chunks = list(raw.parse())
    assert raw.headers["x-router-model"] == "pricey-model"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello from gpt-4o."


def test_in_band_error_as_first_event_still_falls_back(client, upstream):
    upstream.script(RawReply(200, b'data: {"error": {"message": "overloaded"}}\n\n', content_type="text/event-stream"))
    chunks = list(client.chat.completions.create(model="standard", messages=HELLO, stream=True))
    assert {c.model for c in chunks} == {"pricey-model"}


def test_html_error_page_falls_back_and_never_reaches_the_client(client, upstream):
    upstream.script(ErrorReply(502, b"<html><body>Bad Gateway</body></html>", content_type="text/html"))
    completion = client.chat.completions.create(model="standard", messages=HELLO)
    assert completion.model == "pricey-model"


def test_truncated_json_falls_back(client, upstream):
    upstream.script(RawReply(200, b'{"id": "chatcmpl-1", "choices": [', content_type="application/json"))
    assert client.chat.completions.create(model="standard", messages=HELLO).model == "pricey-model"


def test_ttft_timeout_moves_on(client, upstream):
    upstream.script(Hang(5))
    started = time.monotonic()
    chunks = list(client.chat.completions.create(model="standard", messages=HELLO, stream=True))
    assert {c.model for c in chunks} == {"pricey-model"}
    assert time.monotonic() - started < 4  # ttft_timeout_s is 2 in this policy


def test_non_stream_total_timeout_counts_from_the_request_start_and_ends_in_504(client, upstream):
    upstream.script(Hang(10), Hang(10))
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="standard", messages=HELLO)
    assert info.value.status_code == 504
    assert time.monotonic() - started < 8  # timeout_s is 5 for the whole request, not per candidate
    assert len(upstream.chat_requests) == 1  # the first candidate spent it: no second call to time out


def test_each_model_is_tried_at_most_once(client, upstream):
    upstream.script(*[ErrorReply(500)] * 5)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="standard", messages=HELLO)
    assert len(upstream.chat_requests) == 2


def test_a_concrete_model_falls_back_within_its_tier_only(client, upstream):
    upstream.script(ErrorReply(500))
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="pricey-model", messages=HELLO)
    assert info.value.response.headers["x-router-attempts"] == "1"


def test_connect_error_falls_back(tmp_path, upstream):
    dead = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    policy = write_policy(tmp_path, two_model_policy(dead, second_url=upstream.base_url))
    with RunningRouter(policy) as router:
        client = openai.OpenAI(base_url=router.base_url, api_key="x", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="standard", messages=HELLO)
    assert raw.headers["x-router-attempts"] == "2"
    assert raw.parse().model == "pricey-model"


def test_no_candidate_for_an_oversized_prompt_is_a_clear_400(client, upstream):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="standard", messages=HELLO, max_tokens=200000)
    assert "context window is 128000" in info.value.message
    assert upstream.requests == []


def test_a_delayed_but_healthy_answer_is_not_cut(client, upstream):
    upstream.script(Reply(delay_s=1.0))
    assert client.chat.completions.create(model="standard", messages=HELLO).model == "cheap-model"
