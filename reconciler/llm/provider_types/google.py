"""``type: google``: the Gemini API (``base_url`` optional, without ``/v1beta``).

Models are listed with ``GET /v1beta/models`` and the key in the ``x-goog-api-key`` header (not in
the URL, where logs would keep it); chat goes through pydantic-ai's ``GoogleModel`` with an HTTP
client of our own and the SDK's retries off."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

from reconciler.llm.ports import ExecutionSettings, ProviderConfig
from reconciler.llm.provider_types.base import (
    ListingRequest,
    ListingShape,
    ProviderType,
    strip_suffix,
)

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
# id(model) -> the HTTP client it was built with: ours to close when the run's event loop ends
# (GoogleModel is an unhashable dataclass; the entry goes with the model)
_clients: dict[int, Any] = {}


def _root(provider: ProviderConfig) -> str:
    return strip_suffix(provider.base_url or DEFAULT_BASE_URL, "/v1beta", "/v1")


def _bare(name: str) -> str:
    return name.removeprefix("models/")


class GoogleType(ProviderType, name="google", title="Google Gemini", default_base_url=DEFAULT_BASE_URL, prices_provider="google"):
    def listings(self, provider: ProviderConfig) -> list[ListingRequest]:
        headers = {"x-goog-api-key": provider.api_key} if provider.api_key else {}
        return [ListingRequest(f"{_root(provider)}/v1beta/models?pageSize=1000", ListingShape.GOOGLE, headers)]

    def config_problem(self, provider: ProviderConfig) -> str | None:
        return None if provider.api_key else "no api_key: the Gemini API needs one; set spec.api_key"

    def serves(self, listed: Sequence[str], model_name: str) -> bool:
        """The list names ``models/gemini-2.5-flash``; agents say ``gemini-2.5-flash`` (either works)."""
        return _bare(model_name) in {_bare(m) for m in listed}

    def create_model(self, provider: ProviderConfig, model_name: str, settings: ExecutionSettings) -> Any:
        import httpx2
        from google.genai.types import HttpRetryOptions
        from pydantic_ai.models.google import GoogleModel
        from pydantic_ai.providers.google import GoogleProvider

        self.refuse_misconfigured(provider)
        timeout = settings.timeout_seconds
        http = httpx2.AsyncClient(timeout=httpx2.Timeout(timeout, connect=min(timeout, 10.0)))
        google = GoogleProvider(api_key=provider.api_key, base_url=_root(provider), http_client=http, retry_options=HttpRetryOptions(attempts=1))
        model = GoogleModel(_bare(model_name), provider=google)
        _clients[id(model)] = http
        weakref.finalize(model, _clients.pop, id(model), None)
        return model

    async def aclose(self, model: Any) -> None:
        http = _clients.pop(id(model), None)
        if http is not None:
            await http.aclose()


TYPE = GoogleType()
