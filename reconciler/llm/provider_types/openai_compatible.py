"""``type: openai-compatible``: any server that speaks the OpenAI chat API (vLLM, LM Studio, a LiteLLM
proxy, OpenRouter, Groq, ...). ``base_url`` is required (with its ``/v1``), the key optional (Bearer).

Through pydantic-ai's ``OpenAICompatibleProvider``: its model profiles fit such servers (a
``vendor/model`` name gets that vendor's profile; other names the profile OpenAI-compatible
endpoints share, without features only OpenAI's own API has). Costs come from genai-prices when the
base URL is one it knows (OpenRouter, Groq, ...), else zero."""

from __future__ import annotations

from typing import Any

from reconciler.llm.ports import ExecutionSettings, ProviderConfig, RequestRejected
from reconciler.llm.provider_types._openai_sdk import openai_client
from reconciler.llm.provider_types.base import (
    ListingRequest,
    ListingShape,
    ProviderType,
    bearer,
)


class OpenAICompatibleType(ProviderType, name="openai-compatible", title="OpenAI-compatible"):
    def listings(self, provider: ProviderConfig) -> list[ListingRequest]:
        if not provider.base_url:
            return []
        return [ListingRequest(f"{provider.base_url.rstrip('/')}/models", ListingShape.OPENAI, bearer(provider.api_key))]

    def config_problem(self, provider: ProviderConfig) -> str | None:
        return None if provider.base_url else "no base_url: an openai-compatible provider needs the server's address"

    def create_model(self, provider: ProviderConfig, model_name: str, settings: ExecutionSettings) -> Any:
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.openai_compatible import OpenAICompatibleProvider

        problem = self.config_problem(provider)
        if problem:
            raise RequestRejected(f"provider {provider.name!r} (openai-compatible): {problem}", attempts=0)
        client = openai_client(provider.base_url, provider.api_key, settings)
        return OpenAIChatModel(model_name, provider=OpenAICompatibleProvider(provider.name, openai_client=client))


TYPE = OpenAICompatibleType()
