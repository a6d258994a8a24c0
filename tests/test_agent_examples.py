"""An agent's few-shot ``examples``: checked against its tasks' response schemas, stored and planned
like any field, part of a run's config snapshot, and sent as user/assistant message pairs."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from reconciler.llm.ports import AgentConfig, Example, ExecutionSettings, ProviderConfig, TaskConfig
from reconciler.llm.pydantic_ai_adapter import PydanticAIAgent
from reconciler.runs import metrics
from tests.runs.conftest import CLASSIFY_TASK, RUN, keyword_classifier
from tests.stub_openai import StubServer

EXAMPLES = """
  examples:
    - {input: "Message: The page is blank", output: {category: bug, confidence: 90}}
    - {input: "Message: Add a CSV export", output: {category: feature, confidence: 90}}
"""
CONFIG = """
apiVersion: reconciler/v1
kind: Provider
metadata: {name: stub}
spec: {type: openai, base_url: "BASE"}
---
apiVersion: reconciler/v1
kind: Agent
metadata: {name: classifier}
spec:
  provider: stub
  model_name: gpt-4o-mini
  system_prompt: Classify the message.
  temperature: 0.0""" + EXAMPLES.rstrip() + CLASSIFY_TASK


@pytest.fixture(autouse=True)
def _real_requests(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import pydantic_ai.models

    from reconciler.llm import registry

    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", True)
    monkeypatch.setattr(registry, "_default", None)
    yield


def _last_prompt(request: dict) -> str:
    return [m["content"] for m in request["messages"] if m["role"] == "user"][-1]


EXPECTED_MESSAGES = [
    {"role": "system", "content": "Classify the message."},
    {"role": "user", "content": "Message: The page is blank"},
    {"role": "assistant", "content": '{"category": "bug", "confidence": 90}'},
    {"role": "user", "content": "Message: Add a CSV export"},
    {"role": "assistant", "content": '{"category": "feature", "confidence": 90}'},
]


def test_examples_are_sent_as_message_pairs_and_recorded_in_the_snapshot(write_manifests, cli_run, sqlite_url: str) -> None:
    with StubServer(lambda request, n: keyword_classifier(_last_prompt(request))) as stub:
        root = write_manifests({"config.yaml": CONFIG.replace("BASE", stub.base_url), "run.yaml": RUN})
        code, _, err = cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve")
        assert code == 0, err
        code, out, err = cli_run("run", "sample", "--db", sqlite_url)
        assert code == 0, err
        assert "completed — 4/4 valid" in out and "accuracy 100%" in out
        assert len(stub.requests) == 4
        for request in stub.requests:
            assert request["messages"][:-1] == EXPECTED_MESSAGES
            assert request["messages"][-1]["role"] == "user" and request["messages"][-1]["content"].startswith("Message: ")
        code, out, err = cli_run("test", "classifier", "--prompt", "Message: Add dark mode", "--task", "classify", "--db", sqlite_url)
        assert code == 0, err
        assert stub.requests[-1]["messages"][:-1] == EXPECTED_MESSAGES
    shown = json.loads(cli_run("runs", "show", "sample", "--db", sqlite_url, "-o", "json")[1])
    assert shown["config_snapshot"]["agent"]["examples"] == [
        {"input": "Message: The page is blank", "output": {"category": "bug", "confidence": 90}},
        {"input": "Message: Add a CSV export", "output": {"category": "feature", "confidence": 90}},
    ]


def test_changed_examples_are_planned_and_exported(write_manifests, cli_run, sqlite_url: str, tmp_path: Path) -> None:
    config = CONFIG.replace("BASE", "http://127.0.0.1:9/v1")
    root = write_manifests({"config.yaml": config})
    assert cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve")[0] == 0
    assert cli_run("plan", str(root), "--db", sqlite_url, "--detailed-exitcode")[0] == 0  # stored as applied
    changed = write_manifests({"config.yaml": config.replace("Add a CSV export", "Add a PDF export")})
    out = cli_run("plan", str(changed), "--db", sqlite_url, "--json")[1]
    changes = [c for c in json.loads(out)["changes"] if c["kind"] == "Agent"]
    assert [c["action"] for c in changes] == ["update"]
    assert "examples" in json.dumps(changes[0])
    out_dir = tmp_path / "exported"
    assert cli_run("export", "--db", sqlite_url, "--out", str(out_dir))[0] == 0
    assert "Add a CSV export" in "".join(p.read_text() for p in out_dir.iterdir())
    assert cli_run("plan", str(out_dir), "--db", sqlite_url, "--detailed-exitcode")[0] == 0


def test_an_example_that_does_not_fit_the_task_is_located(write_manifests, cli_run) -> None:
    bad = CONFIG.replace("output: {category: feature, confidence: 90}", "output: {category: crash, confidence: 90}").replace("BASE", "http://127.0.0.1:9/v1")
    code, _, err = cli_run("validate", str(write_manifests({"config.yaml": bad})))
    assert code == 1
    assert (
        "config.yaml:16:44: error: Agent \"classifier\" spec.examples.1.output: example 1 does not fit the response_schema "
        "of Task 'classify': at /category: 'crash' is not one of ['bug', 'feature', 'question']"
    ) in err.replace(os.sep, "/")
    missing = CONFIG.replace("BASE", "http://127.0.0.1:9/v1").replace(', output: {category: bug, confidence: 90}', "")
    code, _, err = cli_run("validate", str(write_manifests({"config.yaml": missing})))
    assert code == 1 and "spec.examples.0.output: missing required field" in err


def test_the_adapter_puts_examples_between_the_instructions_and_the_prompt() -> None:
    seen: list[list] = []

    def fn(messages: list, info: AgentInfo) -> ModelResponse:
        seen.append(messages)
        return ModelResponse(parts=[TextPart('{"category": "question"}' if len(seen) > 1 else '{"category": "nope"}')])

    schema = {"type": "object", "properties": {"category": {"enum": ["bug", "question"]}}, "required": ["category"]}
    agent = AgentConfig("a", "m", "Classify.", 0.0, 64, examples=(Example("How?", {"category": "question"}), Example("Crash", "bug")))
    llm = PydanticAIAgent(agent, TaskConfig("t", schema), ProviderConfig("local", "llamacpp"), ExecutionSettings(), FunctionModel(fn))
    result = asyncio.run(llm.run("Why?"))
    assert result.output == {"category": "question"}
    assert result.attempts == 2  # the examples are not counted as requests
    history = seen[0]
    assert [type(m) for m in history] == [ModelRequest, ModelResponse, ModelRequest, ModelResponse, ModelRequest]
    assert [p.content for p in history[0].parts] == ["How?"] and isinstance(history[0].parts[0], UserPromptPart)
    assert [p.content for p in history[1].parts] == ['{"category": "question"}']
    assert [p.content for p in history[3].parts] == ["bug"]  # a text output is sent as it is
    assert history[-1].parts[-1].content == "Why?" and history[-1].instructions == "Classify."


def test_snapshot_without_examples_is_unchanged() -> None:
    provider, task = ProviderConfig("local", "llamacpp"), TaskConfig("t", {})
    plain = metrics.config_snapshot(provider, AgentConfig("a", "m"), task)
    assert "examples" not in plain["agent"]  # runs recorded before examples existed keep their hash
    with_examples = metrics.config_snapshot(provider, AgentConfig("a", "m", examples=(Example("x", "y"),)), task)
    assert with_examples["agent"]["examples"] == [{"input": "x", "output": "y"}]
    assert metrics.snapshot_sha256(plain) != metrics.snapshot_sha256(with_examples)
