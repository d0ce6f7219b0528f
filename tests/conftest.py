from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.fakes import FakeOpenAIUpstream
from tests.harness import RunningRouter, two_model_policy, write_policy


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[FakeOpenAIUpstream]:
    with FakeOpenAIUpstream() as server:
        yield server


@pytest.fixture()
def upstream(upstream_server: FakeOpenAIUpstream) -> FakeOpenAIUpstream:
    upstream_server.reset()
    return upstream_server


@pytest.fixture()
def router(upstream: FakeOpenAIUpstream, tmp_path: Path) -> Iterator[RunningRouter]:
    """A fresh proxy (fresh health state) in front of the fake upstream, two-model policy."""
    policy = write_policy(tmp_path, two_model_policy(upstream.base_url), name="two.yaml")
    with RunningRouter(policy, max_body_mb=1) as running:
        yield running


@pytest.fixture()
def client(router: RunningRouter, upstream: FakeOpenAIUpstream) -> openai.OpenAI:
    """The official SDK, strict response validation, no SDK-side retries."""
    return openai.OpenAI(base_url=router.base_url, api_key="sk-client", max_retries=0, _strict_response_validation=True)


@pytest.fixture()
def tmp_policy_dir(tmp_path: Path) -> Path:
    return tmp_path
