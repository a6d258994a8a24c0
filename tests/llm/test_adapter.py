"""The pydantic-ai adapter with FunctionModel standing in for a model (no network)."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from pydantic_ai.messages import ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from reconciler.llm.ports import AgentConfig, ExecutionSettings, InvalidOutput, ProviderConfig, RetryableError, TaskConfig
from reconciler.llm.pydantic_ai_adapter import PydanticAIAgent, translate_error

SCHEMA = {
    "type": "object",
    "properties": {"category": {"type": "string", "enum": ["bug", "feature"]}, "confidence": {"type": "integer", "minimum": 0, "maximum": 100}},
    "required": ["category", "confidence"],
}
AGENT = AgentConfig("classifier", "stub", "Classify.", 0.0, 64)
PROVIDER = ProviderConfig("local", "llamacpp")


def scripted(*answers: str):  # type: ignore[no-untyped-def]
    """A FunctionModel answering ``answers`` in turn; records what it was sent."""
    seen: list[list] = []

    def fn(messages: list, info: AgentInfo) -> ModelResponse:
        seen.append(messages)
        return ModelResponse(parts=[TextPart(answers[min(len(seen), len(answers)) - 1])])

    return FunctionModel(fn), seen


def make(model: FunctionModel, schema: dict = SCHEMA, retries: int = 2) -> PydanticAIAgent:
    return PydanticAIAgent(AGENT, TaskConfig("classify", schema), PROVIDER, ExecutionSettings(max_retries=retries), model)


def test_valid_output_first_time() -> None:
    model, _ = scripted(json.dumps({"category": "bug", "confidence": 90}))
    agent = make(model)
    result = asyncio.run(agent.run("The app crashes"))
    assert agent.output_mode == "native"
    assert result.output == {"category": "bug", "confidence": 90}
    assert result.attempts == 1
    assert result.input_tokens > 0


def test_invalid_output_is_retried_with_the_error_fed_back() -> None:
    model, seen = scripted(json.dumps({"category": "crash", "confidence": 90}), json.dumps({"category": "bug", "confidence": 90}))
    result = asyncio.run(make(model).run("The app crashes"))
    assert result.output == {"category": "bug", "confidence": 90}
    assert result.attempts == 2
    feedback = json.dumps([str(p) for p in seen[1][-1].parts])
    assert "'crash' is not one of" in feedback


def test_invalid_after_all_retries_fails_with_the_reason() -> None:
    model, seen = scripted(json.dumps({"category": "bug", "confidence": 900}))
    with pytest.raises(InvalidOutput) as info:
        asyncio.run(make(model, retries=2).run("x"))
    assert len(seen) == 3
    assert info.value.attempts == 3
    assert "900 is greater than the maximum of 100" in str(info.value)


def test_output_is_checked_on_the_event_loop_thread() -> None:
    """pydantic-ai runs a plain-``def`` output validator in a worker thread, a hop per answer that cost
    more than the check itself: the adapter's validator must stay ``async``."""
    model, _ = scripted(json.dumps({"category": "crash", "confidence": 90}), json.dumps({"category": "bug", "confidence": 90}))
    agent = make(model)
    checked_in: list[int] = []

    class Recording:
        def errors(self, value: object) -> list[str]:
            checked_in.append(threading.get_ident())
            return real.errors(value)

    real, agent.schema = agent.schema, Recording()  # type: ignore[assignment]
    assert asyncio.run(agent.run("The app crashes")).attempts == 2
    assert checked_in == [threading.get_ident()] * 2


def test_unparseable_json_is_retried_then_fails() -> None:
    model, seen = scripted("sure! it is a bug")
    with pytest.raises(InvalidOutput):
        asyncio.run(make(model, retries=1).run("x"))
    assert len(seen) == 2


def test_recursive_schema_uses_text_mode_and_still_validates() -> None:
    tree = {
        "$defs": {"node": {"type": "object", "properties": {"name": {"type": "string"}, "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}, "required": ["name"]}},
        "$ref": "#/$defs/node",
        "type": "object",
    }
    model, seen = scripted('{"children": []}', '```json\n{"name": "root", "children": [{"name": "leaf"}]}\n```')
    agent = make(model, tree)
    assert agent.output_mode == "text"
    result = asyncio.run(agent.run("x"))
    assert result.output == {"name": "root", "children": [{"name": "leaf"}]}
    assert len(seen) == 2


def test_non_object_schema_uses_text_mode() -> None:
    model, _ = scripted('"feature"')
    agent = make(model, {"type": "string", "enum": ["bug", "feature"]})
    assert agent.output_mode == "text"
    assert asyncio.run(agent.run("x")).output == "feature"


def test_rate_limit_is_retryable_with_retry_after() -> None:
    from pydantic_ai.exceptions import ModelHTTPError

    exc = ModelHTTPError(429, "stub", body={"error": "slow down"}, headers={"Retry-After": "3"})
    error = translate_error(exc, (0, 0, 1))
    assert isinstance(error, RetryableError)
    assert error.retry_after == 3
