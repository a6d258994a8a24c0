"""Pure parts of the provider types: which listed model serves an agent's model_name, what each type
asks for at validation, the model status, and that the wire stubs really refuse what their API would."""

from __future__ import annotations

import asyncio
import typing

import httpx
import pytest

from reconciler.llm.ports import ProviderConfig
from reconciler.llm.provider_types import (
    PROVIDER_TYPE_NAMES,
    ListingShape,
    provider_type,
)
from reconciler.manifests.models import ProviderType
from reconciler.providers.model_check import ModelStatus, model_status, served_list
from reconciler.providers.validation import (
    ProbeError,
    ProbeFailure,
    parse_models,
    validate_provider,
)
from tests.providers.wire import WireStub, serve_api


def test_the_manifest_literal_names_every_provider_type() -> None:
    assert typing.get_args(ProviderType) == PROVIDER_TYPE_NAMES
    assert all(provider_type(name).name == name for name in PROVIDER_TYPE_NAMES)


@pytest.mark.parametrize(
    ("type_name", "listed", "model", "served"),
    [
        ("ollama", ["llama3:latest", "qwen2.5:0.5b"], "llama3", True),
        ("ollama", ["llama3"], "llama3:latest", True),
        ("ollama", ["llama3:8b"], "llama3", False),
        ("ollama", ["qwen2.5:0.5b"], "qwen2.5:0.5b", True),
        ("openai", ["gpt-4o", "gpt-4o-mini"], "gpt-4o-mini", True),
        ("openai", ["gpt-4o"], "gpt-4o-mini", False),
        ("openai-compatible", ["meta-llama/Llama-3.1-8B-Instruct"], "meta-llama/Llama-3.1-8B-Instruct", True),
        ("openai-compatible", ["meta-llama/Llama-3.1-8B-Instruct"], "Llama-3.1-8B-Instruct", False),
        ("anthropic", ["claude-haiku-4-5-20251001"], "claude-haiku-4-5-20251001", True),
        ("anthropic", ["claude-haiku-4-5-20251001"], "claude-haiku-4-5", True),
        ("anthropic", ["claude-3-5-sonnet-20241022"], "claude-3-5-sonnet-latest", True),
        ("anthropic", ["claude-haiku-4-5-20251001"], "claude-haiku-4", False),
        ("google", ["models/gemini-2.5-flash"], "gemini-2.5-flash", True),
        ("google", ["models/gemini-2.5-flash"], "models/gemini-2.5-flash", True),
        ("google", ["models/gemini-2.5-flash"], "gemini-2.5-pro", False),
        ("llamacpp", ["gemma3-270m"], "anything", True),  # llama.cpp serves its one model whatever the name
    ],
    ids=lambda v: str(v),
)
def test_which_listed_model_serves_a_name(type_name: str, listed: list[str], model: str, served: bool) -> None:
    expected = ModelStatus.SERVED if served else ModelStatus.MISSING
    assert model_status(type_name, "connected", listed, model) is expected


@pytest.mark.parametrize(
    ("validation_status", "listed", "type_name"),
    [("pending", ["m"], "openai"), ("error", None, "openai"), ("connected", None, "openai"), ("connected", ["m"], "seed-only-type")],
    ids=["pending", "failed", "no-list", "unknown-type"],
)
def test_without_a_list_to_trust_the_status_is_unknown(validation_status: str, listed: list[str] | None, type_name: str) -> None:
    assert model_status(type_name, validation_status, listed, "other") is ModelStatus.UNKNOWN


def test_a_long_model_list_is_cut_in_messages() -> None:
    names = [f"m{i}" for i in range(25)]
    assert served_list(names).endswith("m19 and 5 more (`reconciler providers models NAME` lists them)")
    assert served_list([]) == "no models"


@pytest.mark.parametrize(
    ("provider", "url", "headers"),
    [
        (ProviderConfig("a", "anthropic", None, api_key="K"), "https://api.anthropic.com/v1/models?limit=1000", {"anthropic-version": "2023-06-01", "x-api-key": "K"}),
        (ProviderConfig("a", "anthropic", "https://proxy.example/v1/", api_key="K"), "https://proxy.example/v1/models?limit=1000", {"anthropic-version": "2023-06-01", "x-api-key": "K"}),
        (ProviderConfig("g", "google", None, api_key="K"), "https://generativelanguage.googleapis.com/v1beta/models?pageSize=1000", {"x-goog-api-key": "K"}),
        (ProviderConfig("g", "google", "http://h:1/v1beta", api_key="K"), "http://h:1/v1beta/models?pageSize=1000", {"x-goog-api-key": "K"}),
        (ProviderConfig("c", "openai-compatible", "http://h:8000/v1/", api_key="K"), "http://h:8000/v1/models", {"Authorization": "Bearer K"}),
        (ProviderConfig("c", "openai-compatible", "http://h:8000/v1"), "http://h:8000/v1/models", {}),
        (ProviderConfig("o", "openai", None, api_key="K"), "https://api.openai.com/v1/models", {"Authorization": "Bearer K"}),
    ],
    ids=["anthropic", "anthropic-base-with-v1", "google", "google-base-with-version", "compatible-with-key", "compatible-without-key", "openai"],
)
def test_each_type_lists_its_models_with_its_own_authentication(provider: ProviderConfig, url: str, headers: dict[str, str]) -> None:
    (request,) = provider_type(provider.type).listings(provider)
    assert (request.url, request.headers) == (url, headers)


@pytest.mark.parametrize(
    ("provider", "message"),
    [
        (ProviderConfig("a", "anthropic", "http://127.0.0.1:9"), "no api_key: the Anthropic API needs one; set spec.api_key"),
        (ProviderConfig("g", "google"), "no api_key: the Gemini API needs one; set spec.api_key"),
        (ProviderConfig("c", "openai-compatible"), "no base_url: an openai-compatible provider needs the server's address"),
    ],
    ids=["anthropic", "google", "compatible"],
)
def test_a_provider_that_cannot_be_asked_fails_before_any_request(provider: ProviderConfig, message: str) -> None:
    result = asyncio.run(validate_provider(provider, timeout=2))
    assert (result.ok, result.error) == (False, message)


@pytest.mark.parametrize(
    ("shape", "body", "names", "following"),
    [
        (ListingShape.ANTHROPIC, {"data": [{"id": "a"}, {"id": "b"}], "has_more": True, "last_id": "b"}, ("a", "b"), "after_id=b"),
        (ListingShape.ANTHROPIC, {"data": [{"id": "c"}], "has_more": False, "last_id": "c"}, ("c",), None),
        (ListingShape.GOOGLE, {"models": [{"name": "models/x"}], "nextPageToken": "t/1"}, ("models/x",), "pageToken=t/1"),
        (ListingShape.GOOGLE, {"models": [{"name": "models/y"}], "nextPageToken": ""}, ("models/y",), None),
        (ListingShape.OPENAI, {"data": [{"id": "m"}, "n", {"no": "id"}]}, ("m", "n"), None),
    ],
    ids=["anthropic-more", "anthropic-last", "google-more", "google-last", "openai"],
)
def test_listing_pages(shape: ListingShape, body: dict, names: tuple[str, ...], following: str | None) -> None:
    assert parse_models(body, shape, "http://h/models") == (names, following)


def test_a_listing_without_its_list_is_not_that_api() -> None:
    with pytest.raises(ProbeError) as err:
        parse_models({"models": []}, ListingShape.ANTHROPIC, "http://h/v1/models")
    assert (err.value.kind, err.value.message) == (ProbeFailure.BODY, "not the Anthropic API: GET http://h/v1/models answered JSON without a 'data' list")


@pytest.mark.parametrize(
    ("api", "method", "path", "headers", "body", "reason"),
    [
        ("anthropic", "GET", "/v1/models", {"x-api-key": "K"}, None, "anthropic-version header missing"),
        ("anthropic", "POST", "/v1/messages", {"x-api-key": "K", "anthropic-version": "2023-06-01", "authorization": "Bearer K"},
         {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}, "the key goes in x-api-key, not Authorization"),
        ("anthropic", "POST", "/v1/messages", {"x-api-key": "K", "anthropic-version": "2023-06-01"},
         {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "max_tokens is required"),
        ("google", "GET", "/v1beta/models?key=K", {}, None, "the key goes in the x-goog-api-key header, not the URL"),
        ("google", "POST", "/v1beta/models/m:generateContent", {"x-goog-api-key": "K"}, {"contents": [{"role": "model", "parts": []}]},
         "contents must end with the user's"),
        ("openai", "POST", "/v1/chat/completions", {"authorization": "Bearer K"},
         {"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": "json_schema"}}, "response_format must be"),
        ("openai", "GET", "/models", {"authorization": "Bearer K"}, None, "the models are listed at /v1/models"),
    ],
    ids=["anthropic-no-version", "anthropic-bearer", "anthropic-no-max-tokens", "google-key-in-url", "google-contents", "openai-format", "openai-path"],
)
def test_the_wire_stubs_refuse_what_their_api_would(api: str, method: str, path: str, headers: dict[str, str], body: dict | None, reason: str) -> None:
    with serve_api(WireStub(api, "K", ("m",))) as stub:  # type: ignore[arg-type]
        response = httpx.request(method, stub.url + path, headers=headers, json=body)
    assert response.status_code == 400 and reason in response.json()["error"]["message"]
    assert len(stub.violations) == 1 and reason in stub.violations[0]


def test_a_type_reconciler_does_not_know_is_a_probe_error_not_a_crash() -> None:
    """A seed database may hold a provider type of its own."""
    result = asyncio.run(validate_provider(ProviderConfig("seed", "bedrock", "http://127.0.0.1:9"), timeout=2))
    assert not result.ok and result.error is not None
    assert result.error.startswith("unknown provider type 'bedrock' (known: ollama, openai, openai-compatible, anthropic, google, llamacpp)")
