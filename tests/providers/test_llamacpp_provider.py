"""The OpenAI-compatible path against the real embedded llama.cpp server (started with an API key)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.providers.helpers import docs, provider_doc

pytestmark = pytest.mark.llm
KEY = "sk-llamacpp-5e2d9b17"


@pytest.fixture(scope="module")
def llama_server() -> Iterator[Any]:
    pytest.importorskip("xllamacpp")
    from reconciler.llm.llamacpp_server import LlamaCppServer

    with LlamaCppServer(api_key=KEY, n_parallel=1, n_ctx=512) as srv:
        yield srv


def test_apply_waits_for_the_real_server(cli_run: Any, sqlite_url: str, write_manifests: Any, llama_server: Any) -> None:
    manifests = str(
        write_manifests(
            {
                "providers.yaml": docs(
                    provider_doc("local-server", "openai", llama_server.base_url, "{from_env: LOCAL_API_KEY}"),
                    provider_doc("local-ollama-style", "ollama", llama_server.root_url, "{from_env: LOCAL_API_KEY}"),
                    provider_doc("embedded", "llamacpp"),
                )
            }
        )
    )
    code, out, err = cli_run("apply", manifests, "--db", sqlite_url, "--auto-approve", "--wait-validation", env={"LOCAL_API_KEY": KEY})
    assert code == 0, err
    assert "  local-server: connected (1 model)\n" in out and "  local-ollama-style: connected (1 model)\n" in out
    code, out, _ = cli_run("providers", "models", "local-server", "--db", sqlite_url, "-o", "json")
    assert code == 0 and json.loads(out)["models"][0].endswith(".gguf")

    code, out, err = cli_run("apply", manifests, "--db", sqlite_url, "--auto-approve", "--wait-validation", env={"LOCAL_API_KEY": "sk-wrong"})
    assert code == 1
    assert "~ provider local-server: api_key (sensitive value changed)" in out
    assert f"  local-server: error: authentication failed (HTTP 401) at {llama_server.base_url}/models: the API key was rejected" in out
    assert "failed validation: local-ollama-style, local-server" in err
    assert "sk-wrong" not in out + err and KEY not in out + err
