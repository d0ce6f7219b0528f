"""Issue 11: real agent and framework clients over ``POST /v1/responses``, as their users run
them, against the real proxy on a real socket. The proxy translates Responses to Chat
Completions for the upstream (the built-in ``simulated`` provider, or a fake OpenAI-shaped
server that speaks only chat).

- openai-agents with its default model class (``OpenAIResponsesModel``), a function tool and
  an ``output_type``, run and streamed;
- pydantic-ai ``OpenAIResponsesModel`` with a tool and an ``output_type``;
- langchain-openai ``ChatOpenAI(use_responses_api=True)`` with ``bind_tools`` (a tool round
  trip) and ``with_structured_output``;
- ``make run`` with no provider keys (the standby simulated provider) and an openai-agents
  agent with a tool and structured output;
- reasoning tokens in a streamed chat usage chunk reach ``response.completed``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import openai
import pytest
from pydantic import BaseModel

from tests.fakes import FakeOpenAIUpstream, Reply
from tests.harness import RunningRouter, metric_sum, scrape, write_policy
from tests.processes import PROVIDER_KEYS, START_WAIT_S, free_port, wait_until

REPO = Path(__file__).resolve().parents[1]
POLICY = """
version: 1
tiers: [standard]
providers:
  sim: {type: simulated, latency_ms: 1, tokens_per_second: 20000}
models:
  sim-model: {provider: sim, tier: standard, price: {input: 1, output: 2}, context_window: 128000, capabilities: [tools, json_schema]}
routes:
  standard: {tier: standard}
defaults: {route: standard, baseline_model: sim-model}
"""
TURN_LIMIT = 4


class Forecast(BaseModel):
    city: str
    summary: str
    days: list[int]
    confidence: Literal["low", "medium", "high"]


@pytest.fixture()
def sim_router(tmp_path: Path) -> Iterator[RunningRouter]:
    with RunningRouter(write_policy(tmp_path, POLICY)) as running:
        yield running


def operations(router_url: str) -> dict[str, float]:
    """Attempts per ``gen_ai_operation_name``: which endpoint the framework really called."""
    samples = scrape(router_url)
    name = "gen_ai_client_operation_duration_seconds_count"
    return {op: metric_sum(samples, name, gen_ai_operation_name=op) for op in ("responses", "chat")}


# --- openai-agents ---------------------------------------------------------------------------


def openai_agents_forecaster(base_url: str, calls: list[str]) -> tuple[Any, Any]:
    """An openai-agents agent with a function tool and an ``output_type``, on the SDK's default
    model class for a model name (``OpenAIResponsesModel``), and the run config that points the
    default provider at the proxy."""
    from agents import Agent, RunConfig, function_tool, set_tracing_disabled
    from agents.models.openai_provider import OpenAIProvider
    from agents.models.openai_responses import OpenAIResponsesModel

    set_tracing_disabled(True)

    @function_tool
    def weather(city: str, unit: Literal["celsius", "fahrenheit"]) -> str:
        """The weather in a city."""
        calls.append(city)
        return f"{city}: 21 degrees {unit}, sunny"

    provider = OpenAIProvider(openai_client=openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0))
    assert isinstance(provider.get_model("standard"), OpenAIResponsesModel)
    agent = Agent(
        name="forecaster",
        instructions="Answer with a forecast.",
        model="standard",
        tools=[weather],
        output_type=Forecast,
    )
    return agent, RunConfig(model_provider=provider, tracing_disabled=True)


def test_openai_agents_default_responses_model_runs_a_tool_and_output_type_to_completion(sim_router):
    from agents import Runner

    calls: list[str] = []
    agent, config = openai_agents_forecaster(sim_router.base_url, calls)
    result = asyncio.run(Runner.run(agent, "Weather in Nice?", max_turns=TURN_LIMIT, run_config=config))
    assert isinstance(result.final_output, Forecast)
    assert len(calls) == 1
    assert [item.type for item in result.new_items] == [
        "tool_call_item",
        "tool_call_output_item",
        "message_output_item",
    ]
    assert len(result.raw_responses) == 2
    assert all(response.response_id and response.response_id.startswith("resp_") for response in result.raw_responses)
    assert operations(sim_router.url) == {"responses": 2, "chat": 0}


def test_openai_agents_streamed_run_with_a_tool_and_output_type_completes(sim_router):
    from agents import Runner

    calls: list[str] = []
    agent, config = openai_agents_forecaster(sim_router.base_url, calls)

    async def run() -> tuple[Any, list[str]]:
        streamed = Runner.run_streamed(agent, "Weather in Nice?", max_turns=TURN_LIMIT, run_config=config)
        kinds = [event.type async for event in streamed.stream_events()]
        return streamed, kinds

    streamed, kinds = asyncio.run(run())
    assert isinstance(streamed.final_output, Forecast)
    assert len(calls) == 1
    assert "raw_response_event" in kinds and "run_item_stream_event" in kinds
    assert streamed.current_turn == 2
    assert operations(sim_router.url) == {"responses": 2, "chat": 0}


# --- pydantic-ai -----------------------------------------------------------------------------


def test_pydantic_ai_responses_model_with_a_tool_and_output_type_completes(sim_router):
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider
    from pydantic_ai.usage import UsageLimits

    calls: list[str] = []
    model = OpenAIResponsesModel("standard", provider=OpenAIProvider(base_url=sim_router.base_url, api_key="unused"))
    agent = Agent(model, output_type=Forecast)

    @agent.tool_plain
    def weather(city: str, days: int) -> str:
        """The weather forecast for a city."""
        calls.append(city)
        return f"{city}: sunny for {days} days"

    result = agent.run_sync("What will the weather be in Nice?", usage_limits=UsageLimits(request_limit=TURN_LIMIT))
    assert isinstance(result.output, Forecast)
    assert len(calls) == 1
    assert result.usage.requests == 2 and result.usage.tool_calls == 1
    assert result.usage.input_tokens > 0 and result.usage.output_tokens > 0
    assert operations(sim_router.url) == {"responses": 2, "chat": 0}


# --- langchain-openai ------------------------------------------------------------------------


def langchain_chat(base_url: str) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model="standard", base_url=base_url, api_key="unused", use_responses_api=True, max_retries=0)


def test_langchain_responses_api_bind_tools_round_trip_ends_in_text_using_the_tool_result(sim_router):
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"{city}: sunny, 21 C"

    llm = langchain_chat(sim_router.base_url).bind_tools([get_weather])
    messages: list[Any] = [HumanMessage("Weather in Nice?")]
    first = llm.invoke(messages)
    (call,) = first.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)
    assert first.usage_metadata["input_tokens"] > 0
    messages += [first, ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])]
    second = llm.invoke(messages)
    assert second.tool_calls == []
    assert f'get_weather returned "{call["args"]["city"]}: sunny, 21 C"' in second.text
    assert operations(sim_router.url) == {"responses": 2, "chat": 0}


def test_langchain_responses_api_streamed_tool_call_carries_the_arguments(sim_router):
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    chunks = list(langchain_chat(sim_router.base_url).bind_tools([get_weather]).stream("Weather in Nice?"))
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    (call,) = merged.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)
    assert merged.usage_metadata["output_tokens"] > 0


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_responses_api_with_structured_output_returns_the_model(sim_router, method):
    forecast = langchain_chat(sim_router.base_url).with_structured_output(Forecast, method=method).invoke("Nice?")
    assert isinstance(forecast, Forecast)
    assert operations(sim_router.url) == {"responses": 1, "chat": 0}


# --- make run, no keys -----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_make_run_without_keys_completes_an_openai_agents_agent_with_a_tool_and_structured_output(tmp_path: Path):
    """`make run` in this checkout (default policy, no provider variables): the standby
    simulated provider answers the agent's Responses calls. Bounded: under ``make test`` the
    checkout's venv is up to date, so the run target starts ``router serve`` at once."""
    from agents import Runner

    port = free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in PROVIDER_KEYS and not k.startswith(("ROUTER_", "VIRTUAL_ENV"))
    }
    env["ROUTER_PORT"] = str(port)
    log = (tmp_path / "run.log").open("w+")
    process = subprocess.Popen(
        ["make", "run"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def healthy() -> bool:
            assert process.poll() is None, f"make run exited with {process.returncode}"
            import httpx

            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200

        wait_until(healthy, START_WAIT_S, "make run serving", interval_s=0.2)
        calls: list[str] = []
        agent, config = openai_agents_forecaster(f"{base}/v1", calls)
        result = asyncio.run(Runner.run(agent, "Weather in Nice?", max_turns=TURN_LIMIT, run_config=config))
        assert isinstance(result.final_output, Forecast)
        assert len(calls) == 1
        assert operations(base) == {"responses": 2, "chat": 0}
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    log.seek(0)
    assert "SIMULATED provider serving" in log.read()


# --- usage details through a stream ----------------------------------------------------------


def test_streamed_reasoning_tokens_reach_response_completed_usage(router, upstream: FakeOpenAIUpstream):
    usage = {
        "prompt_tokens": 30,
        "completion_tokens": 50,
        "total_tokens": 80,
        "prompt_tokens_details": {"cached_tokens": 12, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 37, "audio_tokens": 0},
    }
    upstream.script(Reply(usage=usage))
    client = openai.OpenAI(base_url=router.base_url, api_key="unused", max_retries=0, _strict_response_validation=True)
    with client.responses.stream(model="standard", input="Think, then say hello") as stream:
        completed = [event for event in stream if event.type == "response.completed"]
    (event,) = completed
    assert upstream.last_request.json["stream"] is True
    assert event.response.usage.output_tokens == 50
    assert event.response.usage.output_tokens_details.reasoning_tokens == 37
    assert event.response.usage.input_tokens_details.cached_tokens == 12
