"""What every provider type knows about itself: where its models are listed (and with which
authentication), which listed model serves an agent's ``model_name``, how its requests are priced,
and how to build the pydantic-ai model for it. One module per type subclasses ``ProviderType``;
importing one imports no LLM SDK (``create_model`` does, when a run needs it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from reconciler.llm.ports import ExecutionSettings, ProviderConfig, RequestRejected


class ListingShape(StrEnum):
    """The JSON body a model-listing endpoint answers with."""

    OLLAMA = "ollama"  # GET /api/tags: {"models": [{"name": ..., "model": ...}]}
    OPENAI = "openai"  # GET /models: {"data": [{"id": ...}]}
    ANTHROPIC = "anthropic"  # GET /v1/models: {"data": [{"id": ...}], "has_more": bool, "last_id": ...}
    GOOGLE = "google"  # GET /v1beta/models: {"models": [{"name": "models/..."}], "nextPageToken": ...}

    @property
    def api(self) -> str:
        """How a message names the API this shape belongs to."""
        names = {"ollama": "an Ollama API", "openai": "an OpenAI-compatible API", "anthropic": "the Anthropic API", "google": "the Gemini API"}
        return names[self.value]


@dataclass(frozen=True)
class ListingRequest:
    """One GET that lists models: its URL, the JSON shape expected and the headers (authentication)."""

    url: str
    shape: ListingShape
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # may hold the API key


def bearer(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def strip_suffix(url: str, *suffixes: str) -> str:
    """``url`` without a trailing slash and without one of ``suffixes`` (a base_url given with the
    API version the SDK adds itself)."""
    url = url.rstrip("/")
    for suffix in suffixes:
        if url.endswith(suffix):
            return url[: -len(suffix)]
    return url


class ProviderType:
    """A provider type, chosen by its ``name`` (the manifest's ``spec.type``)."""

    name: str = ""
    title: str = ""  # for messages: "Anthropic"
    default_base_url: str | None = None
    local: bool = False  # runs on your own hardware: no per-token price
    prices_provider: str | None = None  # genai-prices provider id; None: found by the base URL

    def __init_subclass__(
        cls,
        *,
        name: str | None = None,
        title: str | None = None,
        default_base_url: str | None = None,
        local: bool | None = None,
        prices_provider: str | None = None,
    ) -> None:
        """A type states the attributes above where it is declared, ``class XType(ProviderType,
        name="x", title="X", ...)``; one not given keeps its default."""
        super().__init_subclass__()
        given = {"name": name, "title": title, "default_base_url": default_base_url, "local": local, "prices_provider": prices_provider}
        for attribute, value in given.items():
            if value is not None:
                setattr(cls, attribute, value)

    def refuse_misconfigured(self, provider: ProviderConfig) -> None:
        """Before building a model: no request can be sent when ``config_problem`` names a reason."""
        problem = self.config_problem(provider)
        if problem:
            raise RequestRejected(f"provider {provider.name!r} ({self.name}): {problem}", attempts=0)

    def listings(self, provider: ProviderConfig) -> list[ListingRequest]:
        """The requests that list the provider's models, tried in order; empty when it cannot be asked."""
        return []

    def config_problem(self, provider: ProviderConfig) -> str | None:
        """Why no request can be sent at all (no key for the public API), or None."""
        return None

    def embedded(self, provider: ProviderConfig) -> bool:
        """Served by reconciler itself (started on demand): there is no endpoint to probe yet."""
        return False

    def serves(self, listed: Sequence[str], model_name: str) -> bool:
        """Does a provider that lists ``listed`` serve ``model_name``? Exact by default."""
        return model_name in listed

    def create_model(self, provider: ProviderConfig, model_name: str, settings: ExecutionSettings) -> Any:
        """The pydantic-ai model (imports the SDK); the SDK's own retries are off: the runner retries."""
        raise NotImplementedError

    async def aclose(self, model: Any) -> None:
        """Close the model's HTTP client (it belongs to the event loop that used it, which is ending)."""
        client = getattr(model, "client", None)
        close = getattr(client, "close", None)
        if close is not None:
            await close()

    def price_url(self, provider: ProviderConfig) -> str | None:
        """The URL genai-prices matches a provider by, when ``prices_provider`` is None."""
        return provider.base_url or self.default_base_url
