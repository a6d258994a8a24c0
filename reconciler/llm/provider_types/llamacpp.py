"""``type: llamacpp``: the embedded llama.cpp server (a child process started on demand) or one at
``base_url``. Either serves its one model whatever name a request gives, so every name is served."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reconciler.llm.ports import ExecutionSettings, ProviderConfig, ProviderUnreachable
from reconciler.llm.provider_types._openai_sdk import openai_client, v1
from reconciler.llm.provider_types.base import (
    ListingRequest,
    ListingShape,
    ProviderType,
    bearer,
)


class LlamaCppType(ProviderType, name="llamacpp", title="llama.cpp", local=True):
    def listings(self, provider: ProviderConfig) -> list[ListingRequest]:
        if not provider.base_url:
            return []
        return [ListingRequest(f"{provider.base_url.rstrip('/')}/models", ListingShape.OPENAI, bearer(provider.api_key))]

    def embedded(self, provider: ProviderConfig) -> bool:
        return not provider.base_url

    def serves(self, listed: Sequence[str], model_name: str) -> bool:
        return True

    def base_url(self, provider: ProviderConfig) -> str:
        if provider.base_url:
            return v1(provider.base_url)
        from reconciler.llm.llamacpp_shared import ensure_server

        try:
            return ensure_server(provider.model_path)
        except (RuntimeError, OSError) as exc:
            raise ProviderUnreachable(f"the embedded llama.cpp server did not start: {exc}", attempts=0) from None

    def create_model(self, provider: ProviderConfig, model_name: str, settings: ExecutionSettings) -> Any:
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.openai import OpenAIProvider

        client = openai_client(self.base_url(provider), provider.api_key, settings)
        return OpenAIChatModel(model_name, provider=OpenAIProvider(openai_client=client))

    def recover(self, provider: ProviderConfig, model: Any) -> bool:
        """After a connection failure: restart the embedded server if it died (True when it runs again),
        pointing the model's client at it (a restart keeps the port when it can, not always)."""
        if provider.base_url:
            return False
        try:
            url = self.base_url(provider)
        except ProviderUnreachable:
            return False
        client = getattr(model, "client", None)
        if client is not None and str(client.base_url).rstrip("/") != url.rstrip("/"):
            client.base_url = url
        return True


TYPE = LlamaCppType()
