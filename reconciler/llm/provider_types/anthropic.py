"""``type: anthropic``: the Anthropic Messages API (``base_url`` optional, without ``/v1``).

Models are listed with ``GET /v1/models`` and the documented authentication (``x-api-key`` and
``anthropic-version``); chat goes through pydantic-ai's ``AnthropicModel`` with an SDK client of our
own that sends the same ``x-api-key`` header, never retries by itself and never reads
``$ANTHROPIC_API_KEY`` (a key for one base_url must not go to another)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from reconciler.llm.ports import ExecutionSettings, ProviderConfig
from reconciler.llm.provider_types.base import (
    ListingRequest,
    ListingShape,
    ProviderType,
    strip_suffix,
)

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"  # the version the Models API documents; the SDK sends its own on chat
# Anthropic requires max_tokens; without one pydantic-ai sends the model's maximum and then streams
# the request behind the scenes. An agent's own max_tokens overrides this.
DEFAULT_MAX_TOKENS = 4096
_DATED = re.compile(r"-\d{8}$")


def _root(provider: ProviderConfig) -> str:
    return strip_suffix(provider.base_url or DEFAULT_BASE_URL, "/v1")


class AnthropicType(ProviderType, name="anthropic", title="Anthropic", default_base_url=DEFAULT_BASE_URL, prices_provider="anthropic"):
    def listings(self, provider: ProviderConfig) -> list[ListingRequest]:
        headers = {"anthropic-version": API_VERSION, **({"x-api-key": provider.api_key} if provider.api_key else {})}
        return [ListingRequest(f"{_root(provider)}/v1/models?limit=1000", ListingShape.ANTHROPIC, headers)]

    def config_problem(self, provider: ProviderConfig) -> str | None:
        return None if provider.api_key else "no api_key: the Anthropic API needs one; set spec.api_key"

    def serves(self, listed: Sequence[str], model_name: str) -> bool:
        """The list holds dated ids (``claude-sonnet-4-5-20250929``); the API also takes their aliases
        (``claude-sonnet-4-5``, ``claude-3-5-sonnet-latest``)."""
        alias = model_name.removesuffix("-latest")
        return any(m == model_name or _DATED.sub("", m) == alias for m in listed)

    def create_model(self, provider: ProviderConfig, model_name: str, settings: ExecutionSettings) -> Any:
        from anthropic import AsyncAnthropic, Omit
        from pydantic_ai.models.anthropic import AnthropicModel
        from pydantic_ai.providers.anthropic import AnthropicProvider

        self.refuse_misconfigured(provider)
        client = AsyncAnthropic(
            api_key=provider.api_key,
            base_url=_root(provider),
            max_retries=0,
            timeout=settings.timeout_seconds,
            # Omit() drops the SDK's own Bearer header (its stubs type the values as str only)
            default_headers={"x-api-key": provider.api_key, "Authorization": Omit()},  # type: ignore[dict-item]
        )
        return AnthropicModel(model_name, provider=AnthropicProvider(anthropic_client=client), settings={"max_tokens": DEFAULT_MAX_TOKENS})


TYPE = AnthropicType()
