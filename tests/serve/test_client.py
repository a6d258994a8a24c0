"""The application client against the stub OpenAI server (real HTTP, real database) and, where only
the adapter's behaviour matters, pydantic-ai's TestModel."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import reconciler
from reconciler.client import (
    AgentInactive,
    AgentNotFound,
    Client,
    ClientError,
    InvalidAgentOutput,
    ModelNotFound,
    TaskNotAssigned,
    TaskNotFound,
)
from reconciler.llm.registry import AgentRegistry
from tests.conftest import REPO
from tests.serve.conftest import API_KEY, State
from tests.stub_openai import Reply, StubServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def registry(real_llm_requests: None) -> AgentRegistry:
    from reconciler.llm.pydantic_ai_adapter import PydanticAIFramework

    return AgentRegistry(PydanticAIFramework())


@pytest.fixture
def client_for(registry: AgentRegistry) -> Iterator[Any]:
    made: list[Client] = []

    def make(state: State, **kw: Any) -> Client:
        kw.setdefault("registry", registry)
        client = Client(state.url, **kw)
        made.append(client)
        return client

    yield make
    for c in made:
        c.close()


def _system_prompt(request: dict[str, Any]) -> str:
    return next(m["content"] for m in request["messages"] if m["role"] in ("system", "developer"))


def test_runs_the_agent_git_declared(state: State, stub: StubServer, client_for: Any) -> None:
    client = client_for(state)
    agent = client.agent("classifier", task="classify")
    result = agent.run_sync("Message: the app crashes")
    assert result.output == {"category": "bug", "confidence": 80}
    assert (result.agent, result.task, result.assignment, result.provider, result.model_name) == (
        "classifier", "classify", "classifier-classify", "stub", "gpt-4o-mini",
    )
    assert (result.input_tokens, result.output_tokens, result.attempts) == (10, 5, 1)
    assert stub.authorizations[-1] == f"Bearer {API_KEY}"  # decrypted as a run decrypts it
    assert _system_prompt(stub.requests[-1]) == "Classify the message."
    # the hash is the one a run with this configuration records
    state.cli("run", str(state.run_manifest("same")))
    from reconciler.runs.store import find_run
    from reconciler.state.db import open_engine

    assert result.config_sha256 == find_run(open_engine(state.url, create=False), "same").config_sha256


def test_one_instance_per_configuration_and_event_loop(sqlite_state: State, client_for: Any, registry: AgentRegistry) -> None:
    agent = client_for(sqlite_state).agent("classifier", task="classify")
    outputs = [agent.run_sync(f"Message: crash {i}").output["category"] for i in range(5)]
    assert outputs == ["bug"] * 5
    assert registry.created == 1

    async def app() -> list[str]:
        return [(await agent.run("Message: how do I log in?")).output["category"] for _ in range(3)]

    assert asyncio.run(app()) == ["question"] * 3
    assert registry.created == 2  # the application's own loop gets its own instance (HTTP pools are per loop)


def test_a_new_apply_is_seen_after_the_refresh_interval_and_not_per_call(
    sqlite_state: State, stub: StubServer, client_for: Any, registry: AgentRegistry
) -> None:
    clock = Clock()
    client = client_for(sqlite_state, refresh_seconds=2.0, clock=clock)
    agent = client.agent("classifier", task="classify")
    before = agent.run_sync("Message: crash")
    checks = client.checks
    sqlite_state.write(prompt="Classify the message. Be brief.")
    sqlite_state.apply("--no-validate")  # another process
    for _ in range(10):
        assert agent.run_sync("Message: crash").config_sha256 == before.config_sha256
    assert client.checks == checks  # no query per call within the interval
    assert _system_prompt(stub.requests[-1]) == "Classify the message."
    clock.now += 2.0
    after = agent.run_sync("Message: crash")
    assert after.config_sha256 != before.config_sha256
    assert _system_prompt(stub.requests[-1]) == "Classify the message. Be brief."
    assert client.checks == checks + 1 and registry.created == 2


def test_an_agent_switched_off_by_an_apply_raises_on_the_next_call(sqlite_state: State, client_for: Any) -> None:
    clock = Clock()
    agent = client_for(sqlite_state, clock=clock).agent("classifier", task="classify")
    agent.run_sync("Message: crash")
    text = (sqlite_state.root / "all.yaml").read_text()
    (sqlite_state.root / "all.yaml").write_text(text.replace("spec: {agent: classifier, task: classify}", "spec: {agent: classifier, task: classify, is_active: false}"))
    sqlite_state.apply("--no-validate")
    clock.now += 60
    with pytest.raises(AgentInactive, match="assignment 'classifier-classify' is inactive"):
        agent.run_sync("Message: crash")


@pytest.mark.parametrize(
    ("agent", "task", "error", "message", "hint"),
    [
        pytest.param("nobody", "classify", AgentNotFound, "no agent named 'nobody'", "'classifier'", id="unknown-agent"),
        pytest.param("classifier", "nothing", TaskNotFound, "no task named 'nothing'", "'classify'", id="unknown-task"),
        pytest.param("classifier", "triage", TaskNotAssigned, "not assigned task 'triage'", "agent 'classifier' has 'classify'", id="unassigned"),
        pytest.param("loner", "classify", TaskNotAssigned, "not assigned task 'classify'", "has no tasks", id="agent-without-tasks"),
        pytest.param("dormant", "classify", AgentInactive, "agent 'dormant' is inactive", "is_active: true", id="inactive-agent"),
    ],
)
def test_clear_errors(shared_state: State, client_for: Any, agent: str, task: str, error: type, message: str, hint: str, monkeypatch: Any) -> None:
    for k, v in shared_state.env.items():
        monkeypatch.setenv(k, v)
    client = client_for(shared_state)
    with pytest.raises(error) as info:
        client.agent(agent, task=task)
    assert isinstance(info.value, ClientError)
    [problem] = info.value.problems
    assert message in problem.message and hint in problem.hint, (problem.message, problem.hint)


def test_a_model_the_provider_does_not_serve(sqlite_state: State, client_for: Any) -> None:
    def missing(request: dict[str, Any], n: int) -> Reply:
        return Reply(404, body={"error": {"message": f"The model `{request['model']}` does not exist", "type": "invalid_request_error", "code": "model_not_found"}})

    with StubServer(missing) as server:
        sqlite_state.base_url = server.base_url
        sqlite_state.write()
        sqlite_state.apply("--no-validate")
        agent = client_for(sqlite_state).agent("classifier", task="classify")
        with pytest.raises(ModelNotFound, match="does not serve model 'gpt-4o-mini'") as info:
            agent.run_sync("Message: crash")
    assert "spec.model_name" in info.value.problems[0].hint


def test_answers_outside_the_schema_are_an_invalid_output(sqlite_state: State, client_for: Any) -> None:
    with StubServer(lambda request, n: {"category": "weather", "confidence": 500}) as server:
        sqlite_state.base_url = server.base_url
        sqlite_state.write()
        sqlite_state.apply("--no-validate")
        agent = client_for(sqlite_state, max_retries=1).agent("classifier", task="classify")
        with pytest.raises(InvalidAgentOutput) as info:
            agent.run_sync("Message: crash")
        assert len(server.requests) == 2  # the first answer, then one retry with the errors fed back
    assert info.value.attempts == 2 and not info.value.retryable


def test_an_unreachable_provider_is_a_retryable_failure(sqlite_state: State, client_for: Any) -> None:
    from reconciler.client import AgentCallFailed
    from tests.providers.servers import closed_port

    sqlite_state.base_url = f"http://127.0.0.1:{closed_port()}/v1"
    sqlite_state.write()
    sqlite_state.apply("--no-validate")
    with pytest.raises(AgentCallFailed) as info:
        client_for(sqlite_state).agent("classifier", task="classify").run_sync("Message: crash")
    assert info.value.retryable


@pytest.mark.parametrize(
    ("answer", "valid"),
    [
        pytest.param({"category": "feature", "confidence": 70}, True, id="valid"),
        pytest.param({"category": "feature", "confidence": 700}, False, id="out-of-range"),
        pytest.param({"category": "weather", "confidence": 70}, False, id="not-in-enum"),
    ],
)
def test_output_is_checked_against_the_schema_with_pydantic_ais_test_model(
    shared_state: State, monkeypatch: Any, answer: dict[str, Any], valid: bool
) -> None:
    """In-process, with TestModel answering ``answer``: the client hands back only what the task's
    schema accepts (TestModel fills schemas only for tool output, which the adapter does not use)."""
    from pydantic_ai.models.test import TestModel

    from reconciler.llm.pydantic_ai_adapter import PydanticAIAgent

    for k, v in shared_state.env.items():
        monkeypatch.setenv(k, v)
    seen: list[Any] = []

    def factory(agent: Any, task: Any, provider: Any, settings: Any) -> PydanticAIAgent:
        seen.append((agent.name, task.name, provider.api_key))
        return PydanticAIAgent(agent, task, provider, settings, TestModel(custom_output_text=json.dumps(answer)))

    with Client(shared_state.url, registry=AgentRegistry(factory), max_retries=0) as client:
        agent = client.agent("classifier", task="classify")
        if valid:
            assert agent.run_sync("Message: anything").output == answer
        else:
            with pytest.raises(InvalidAgentOutput):
                agent.run_sync("Message: anything")
    assert seen == [("classifier", "classify", API_KEY)]


def test_run_sync_inside_an_event_loop_says_to_await(shared_state: State, client_for: Any, monkeypatch: Any) -> None:
    for k, v in shared_state.env.items():
        monkeypatch.setenv(k, v)
    agent = client_for(shared_state).agent("classifier", task="classify")

    async def inside() -> None:
        with pytest.raises(ClientError, match="inside a running event loop"):
            agent.run_sync("x")

    asyncio.run(inside())


def test_no_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ClientError, match="no state database yet"):
        Client(f"sqlite:///{tmp_path / 'none.db'}")


def test_the_package_exports_the_client_lazily() -> None:
    assert reconciler.Client is Client
    assert "Client" in dir(reconciler) and "Client" in reconciler.__all__
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        reconciler.Nope  # noqa: B018
    assert (REPO / "reconciler" / "py.typed").exists()


def test_pydantic_ai_is_imported_only_by_the_first_call(shared_state: State) -> None:
    script = f"""
import json, sys
import reconciler
before = "pydantic_ai" in sys.modules or "reconciler.client" in sys.modules
from reconciler import Client
client = Client({shared_state.url!r})
agent = client.agent("classifier", task="classify")
resolved = "pydantic_ai" in sys.modules
result = agent.run_sync("Message: the app crashes")
print(json.dumps([before, resolved, "pydantic_ai" in sys.modules, result.output]))
"""
    import os

    env = {**os.environ, **shared_state.env, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [False, False, True, {"category": "bug", "confidence": 80}]
