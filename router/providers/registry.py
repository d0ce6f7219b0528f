"""Build one adapter per enabled provider of a policy (the only place adapters are made)."""

from __future__ import annotations

import logging

from router.policy.model import Policy, Provider
from router.providers.base import ProviderAdapter
from router.providers.http_errors import Redactor
from router.providers.openai_compat import OpenAICompatibleAdapter, session_for
from router.providers.simulated import SimulatedAdapter

log = logging.getLogger("router.providers")


def build_adapters(policy: Policy, max_connections: int) -> dict[str, ProviderAdapter]:
    adapters: dict[str, ProviderAdapter] = {}
    redact = Redactor.for_policy(policy)
    for provider in policy.providers.values():
        if provider.enabled:
            adapters[provider.name] = _adapter(provider, max_connections, redact)
    return adapters


def _adapter(provider: Provider, max_connections: int, redact: Redactor) -> ProviderAdapter:
    if provider.type == "openai":
        limit = provider.max_connections or max_connections
        return OpenAICompatibleAdapter(provider, session_for(provider, limit), limit, redact)
    if provider.type == "simulated":
        return SimulatedAdapter(provider)
    from router.providers.litellm_adapter import LiteLLMAdapter  # imports litellm: only when configured

    return LiteLLMAdapter(provider)


async def close_adapters(adapters: dict[str, ProviderAdapter]) -> None:
    for adapter in adapters.values():
        await adapter.aclose()
