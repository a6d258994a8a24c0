"""``type: ollama``: Ollama's own API for listing models, its OpenAI-compatible API for chat."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reconciler.llm.ports import ExecutionSettings, ProviderConfig
from reconciler.llm.provider_types._openai_sdk import openai_client, v1
from reconciler.llm.provider_types.base import (
    ListingRequest,
    ListingShape,
    ProviderType,
    bearer,
    strip_suffix,
)

DEFAULT_BASE_URL = "http://localhost:11434"


def _untagged(name: str) -> str:
    return name.removesuffix(":latest")


class OllamaType(ProviderType, name="ollama", title="Ollama", default_base_url=DEFAULT_BASE_URL, local=True):
    def listings(self, provider: ProviderConfig) -> list[ListingRequest]:
        """``/api/tags`` first, then ``/v1/models`` (a base_url ending in ``/v1`` is probed at its root,
        as Ollama serves both)."""
        root = strip_suffix(provider.base_url or DEFAULT_BASE_URL, "/v1")
        headers = bearer(provider.api_key)
        return [ListingRequest(f"{root}/api/tags", ListingShape.OLLAMA, headers), ListingRequest(f"{root}/v1/models", ListingShape.OPENAI, headers)]

    def serves(self, listed: Sequence[str], model_name: str) -> bool:
        """Ollama answers ``llama3`` with ``llama3:latest``: a name without a tag means ``:latest``."""
        wanted = _untagged(model_name)
        return any(_untagged(m) == wanted for m in listed)

    def create_model(self, provider: ProviderConfig, model_name: str, settings: ExecutionSettings) -> Any:
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.ollama import OllamaProvider

        client = openai_client(v1(provider.base_url or DEFAULT_BASE_URL), provider.api_key, settings)
        return OpenAIChatModel(model_name, provider=OllamaProvider(openai_client=client))


TYPE = OllamaType()
