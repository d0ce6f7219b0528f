"""What every OpenAI client expects besides chat: ``GET /v1/models/{id}``, CORS, whole usage
objects and legacy ``POST /v1/completions``; the official SDK against the running proxy in
front of the fake OpenAI upstream."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.harness import RunningRouter, two_model_policy, write_policy
from tests.policies import key

WEB_KEY = "sk-tr-web-compat-0123456789abcdef"
OPS_KEY = "sk-tr-ops-compat-0123456789abcdef"


@pytest.fixture()
def keyed(tmp_path, upstream):
    """Two keys: ``web-app`` may use the ``standard`` route and ``cheap-model`` only; ``ops`` anything."""
    keys = [
        key(WEB_KEY, "web-app", team="web", routes=["standard", "cheap-model"]),
        key(OPS_KEY, "ops", team="platform"),
    ]
    with RunningRouter(write_policy(tmp_path, two_model_policy(upstream.base_url, keys=keys))) as router:
        yield router


def sdk(router: RunningRouter, api_key: str = "sk-client", strict: bool = True) -> openai.OpenAI:
    return openai.OpenAI(base_url=router.base_url, api_key=api_key, max_retries=0, _strict_response_validation=strict)


class TestRetrieveModel:
    def test_every_listed_id_is_retrieved_with_the_same_entry(self, client):
        listed = client.models.list().data
        assert {m.id for m in listed} >= {"standard", "frontier", "small", "cheap-model", "pricey-model"}
        for entry in listed:
            assert client.models.retrieve(entry.id) == entry

    def test_an_unknown_id_is_404_model_not_found(self, client):
        with pytest.raises(openai.NotFoundError) as info:
            client.models.retrieve("no-such-model")
        assert info.value.code == "model_not_found"
        error = info.value.body
        assert set(error) == {"message", "type", "param", "code"}
        assert "no-such-model" in error["message"] and "/v1/models" in error["message"]

    def test_a_key_retrieves_only_its_allowed_routes(self, keyed):
        web = sdk(keyed, WEB_KEY)
        assert web.models.retrieve("standard").owned_by == "tier-router"
        assert web.models.retrieve("cheap-model").owned_by == "primary"
        with pytest.raises(openai.NotFoundError) as info:
            web.models.retrieve("pricey-model")
        assert info.value.code == "model_not_found"
        assert sdk(keyed, OPS_KEY).models.retrieve("pricey-model").id == "pricey-model"

    def test_a_retrieve_needs_a_key_when_keys_are_configured(self, keyed):
        with pytest.raises(openai.AuthenticationError):
            sdk(keyed, "sk-tr-wrong").models.retrieve("standard")

    def test_an_id_with_a_slash_is_looked_up_whole(self, router):
        response = httpx.get(f"{router.base_url}/models/org/standard", timeout=5)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "model_not_found"
