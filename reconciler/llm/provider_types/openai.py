"""``type: openai``: the OpenAI API, or a server that is a drop-in for it at ``base_url``."""

from __future__ import annotations

from typing import Any

from reconciler.llm.ports import ExecutionSettings, ProviderConfig
from reconciler.llm.provider_types._openai_sdk import openai_client
from reconciler.llm.provider_types.base import (
    ListingRequest,
    ListingShape,
    ProviderType,
    bearer,
)

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAIType(ProviderType, name="openai", title="OpenAI", default_base_url=DEFAULT_BASE_URL, prices_provider="openai"):
    def listings(self, provider: ProviderConfig) -> list[ListingRequest]:
        root = (provider.base_url or DEFAULT_BASE_URL).rstrip("/")
        return [ListingRequest(f"{root}/models", ListingShape.OPENAI, bearer(provider.api_key))]

    def config_problem(self, provider: ProviderConfig) -> str | None:
        if not provider.base_url and not provider.api_key:
            return f"no api_key: {DEFAULT_BASE_URL} needs one; set spec.api_key (or a base_url)"
        return None

    def create_model(self, provider: ProviderConfig, model_name: str, settings: ExecutionSettings) -> Any:
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.openai import OpenAIProvider

        self.refuse_misconfigured(provider)
        client = openai_client(provider.base_url, provider.api_key, settings)
        return OpenAIChatModel(model_name, provider=OpenAIProvider(openai_client=client))


TYPE = OpenAIType()
