"""The OpenAI SDK client the OpenAI-speaking types share (ollama, openai, openai-compatible, llamacpp)."""

from __future__ import annotations

from typing import Any

from reconciler.llm.ports import ExecutionSettings

NO_KEY = "api-key-not-set"  # the SDK insists on a key; pydantic-ai sends this placeholder too


def openai_client(base_url: str | None, api_key: str | None, settings: ExecutionSettings) -> Any:
    """Our own client: retries are the runner's job (counted, with jittered backoff), not the SDK's.
    The key is always passed, so the SDK never falls back to $OPENAI_API_KEY (which must not go to
    another service's base_url)."""
    from openai import AsyncOpenAI

    return AsyncOpenAI(base_url=base_url, api_key=api_key or NO_KEY, max_retries=0, timeout=settings.timeout_seconds)


def v1(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"
