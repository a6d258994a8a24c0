"""The answer cache: its key covers every setting that reaches the model and nothing else, proved on
the wire (a setting changes the key exactly when it changes the request a stub server receives),
and runs reuse answers through it on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import create_engine, select

from reconciler.llm.ports import AgentConfig, Example, ExecutionSettings, ProviderConfig, TaskConfig
from reconciler.runs import answer_cache
from reconciler.runs.answer_cache import CachedAnswer, CacheKey
from reconciler.runs.evaluate import Arm, EvalItem, EvaluationOptions, evaluate
from reconciler.state.db import database_url, open_engine
from reconciler.state.tables import answer_cache as answer_cache_table
from tests.runs.conftest import CONFIG, RUN, STUB_CONFIG, keyword_classifier
from tests.stub_openai import StubServer

SCHEMA = {
    "type": "object",
    "properties": {"category": {"type": "string", "enum": ["bug", "feature", "question"]}, "confidence": {"type": "integer"}},
    "required": ["category", "confidence"],
}
BASE_AGENT = AgentConfig(
    name="classifier", model_name="gpt-4o-mini", system_prompt="Classify the message.", temperature=0.0, max_tokens=64,
    examples=(Example("Message: it crashes", {"category": "bug", "confidence": 90}),),
)
BASE_TASK = TaskConfig(name="classify", response_schema=SCHEMA)
PROMPT = "Message: The app crashes on login"


def _prompt(request: dict[str, Any]) -> str:
    return [m["content"] for m in request["messages"] if m["role"] == "user"][-1]


def _key_and_request(stub: StubServer, arm: Arm, prompt: str = PROMPT, settings: ExecutionSettings | None = None) -> tuple[CacheKey, dict[str, Any]]:
    """Answer one prompt through the stub: the cache key the engine stores it under, and the request sent."""
    saved: list[tuple[CacheKey, CachedAnswer]] = []
    before = len(stub.requests)
    outcome = evaluate(
        [arm], [[EvalItem(0, {"text": prompt}, prompt)]], EvaluationOptions(1, settings or ExecutionSettings()),
        save=lambda batch, answers: saved.extend(answers),
    )
    assert outcome.processed == 1 and outcome.stopped_reason is None
    (request,) = stub.requests[before:]
    (entry,) = saved
    return entry[0], request


# (what changes, how): each reaches the model, so each must change the key
REACHING = [
    ("model", lambda a, url: replace(a, agent=replace(a.agent, model_name="gpt-4o"))),
    ("system prompt", lambda a, url: replace(a, agent=replace(a.agent, system_prompt="Sort the message."))),
    ("examples removed", lambda a, url: replace(a, agent=replace(a.agent, examples=()))),
    ("example output", lambda a, url: replace(a, agent=replace(a.agent, examples=(Example("Message: it crashes", {"category": "bug", "confidence": 80}),)))),
    ("temperature", lambda a, url: replace(a, agent=replace(a.agent, temperature=0.7))),
    ("max_tokens", lambda a, url: replace(a, agent=replace(a.agent, max_tokens=128))),
    ("response schema", lambda a, url: replace(a, task=replace(a.task, response_schema={**SCHEMA, "required": ["category"]}))),
    ("output name (task renamed)", lambda a, url: replace(a, task=replace(a.task, name="triage"))),
    ("base url", lambda a, url: replace(a, provider=replace(a.provider, base_url=url.replace("127.0.0.1", "localhost")))),
]
# settings that never reach the model: the same key
NOT_REACHING = [
    ("agent name", lambda a, url: replace(a, label="other", agent=replace(a.agent, name="renamed-agent"))),
    ("provider name", lambda a, url: replace(a, provider=replace(a.provider, name="other-provider"))),
    ("prices", lambda a, url: replace(a, agent=replace(a.agent, prices={"input_per_mtok": 1.0, "output_per_mtok": 2.0}))),
    ("api key", lambda a, url: replace(a, provider=replace(a.provider, api_key="sk-other"))),
]


@pytest.mark.usefixtures("real_llm_requests")
def test_key_changes_exactly_when_the_request_changes() -> None:
    with StubServer(lambda request, n: keyword_classifier(_prompt(request))) as stub:
        base = Arm("classifier", BASE_AGENT, BASE_TASK, ProviderConfig("stub", "openai", stub.base_url))
        key, request = _key_and_request(stub, base)
        assert request["response_format"]["type"] == "json_schema"  # native output: the schema and its name are sent
        for what, change in REACHING:
            arm = change(base, stub.base_url)
            other_key, other_request = _key_and_request(stub, arm)
            sent_differently = other_request != request or arm.provider.base_url != base.provider.base_url
            assert sent_differently, f"{what}: the test changed nothing on the wire"
            assert other_key.config_sha256 != key.config_sha256 or other_key.messages_sha256 != key.messages_sha256, what
        for what, change in NOT_REACHING:
            other_key, other_request = _key_and_request(stub, change(base, stub.base_url))
            assert other_request == request, f"{what}: reached the model after all"
            assert other_key == key, what
        # nor do retries, timeouts or concurrency (they shape how often and how long, not what is asked)
        assert _key_and_request(stub, base, settings=ExecutionSettings(max_retries=7, timeout_seconds=3))[0] == key
        # the prompt is part of the messages
        other_key, other_request = _key_and_request(stub, base, prompt="Message: Please add dark mode")
        assert other_key.config_sha256 == key.config_sha256 and other_key.messages_sha256 != key.messages_sha256


def _settings(provider: ProviderConfig, mode: str = "native", model_file: dict[str, Any] | None = None, **agent: Any) -> str:
    return answer_cache.settings_sha256(answer_cache.request_settings(provider, replace(BASE_AGENT, **agent), BASE_TASK, mode, model_file))


@pytest.mark.parametrize(
    ("change", "same"),
    [
        ({"provider": ProviderConfig("local", "ollama")}, False),
        ({"provider": ProviderConfig("local", "llamacpp", model_path="/models/other.gguf")}, False),
        ({"model_file": {"name": "gemma", "sha256": "b" * 64}}, False),
        ({"mode": "prompted"}, False),
        ({"mode": "text"}, False),
        ({"provider": ProviderConfig("renamed", "llamacpp")}, True),
    ],
    ids=["provider-type", "model-path", "model-file", "output-mode-prompted", "output-mode-text", "provider-name"],
)
def test_settings_a_stub_cannot_show(change: dict[str, Any], same: bool) -> None:
    """Provider types, model files and output modes that an OpenAI stub cannot exercise: checked on the settings."""
    base = {"provider": ProviderConfig("local", "llamacpp"), "mode": "native", "model_file": {"name": "gemma", "sha256": "a" * 64}}
    assert (_settings(**base) == _settings(**{**base, **change})) is same


def test_text_mode_instructions_are_part_of_the_messages() -> None:
    native = answer_cache.messages_sha256(BASE_AGENT, BASE_TASK, "native", PROMPT)
    text = answer_cache.messages_sha256(BASE_AGENT, BASE_TASK, "text", PROMPT)
    other_schema = answer_cache.messages_sha256(BASE_AGENT, replace(BASE_TASK, response_schema={"type": "object"}), "text", PROMPT)
    assert len({native, text, other_schema}) == 3


def test_store_keeps_the_first_answer_and_lookup_finds_by_repeat(db_url: str) -> None:
    engine = open_engine(db_url, create=True)
    assert engine is not None
    first = (CacheKey("c" * 64, "m" * 64, 0), CachedAnswer({"category": "bug"}, 10, 5, 12.5))
    answer_cache.store(engine, [first])
    answer_cache.store(engine, [(first[0], CachedAnswer({"category": "feature"}, 1, 1, 1.0)), (CacheKey("c" * 64, "m" * 64, 1), CachedAnswer("two", 3, 4, None))])
    wanted = [CacheKey("c" * 64, "m" * 64, r) for r in range(3)] + [CacheKey("d" * 64, "m" * 64, 0)]
    assert answer_cache.lookup(engine, wanted) == {
        CacheKey("c" * 64, "m" * 64, 0): CachedAnswer({"category": "bug"}, 10, 5, 12.5),
        CacheKey("c" * 64, "m" * 64, 1): CachedAnswer("two", 3, 4, None),
    }
    assert answer_cache.count(engine) == 2
    engine.dispose()


def _rows(db: str) -> list[dict[str, Any]]:
    engine = create_engine(database_url(db))
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(select(answer_cache_table)).mappings()]
    engine.dispose()
    return rows


@pytest.mark.usefixtures("real_llm_requests")
def test_runs_reuse_answers_and_no_cache_forces_calls(write_manifests, cli_run, db_url: str) -> None:
    with StubServer(lambda request, n: keyword_classifier(_prompt(request))) as stub:
        config = STUB_CONFIG.replace("BASE", stub.base_url)
        second = RUN.replace("name: sample", "name: sample-2").replace("concurrency: 3", "concurrency: 1")  # concurrency: not in the key
        root = write_manifests({"config.yaml": config, "run.yaml": RUN, "run2.yaml": second})
        assert cli_run("apply", str(root), "--db", db_url, "--auto-approve")[0] == 0
        code, out, err = cli_run("run", "sample", "--db", db_url)
        assert code == 0, err
        assert len(stub.requests) == 4 and "reused" not in out.splitlines()[-1]
        assert len(_rows(db_url)) == 4

        code, out, err = cli_run("run", "sample-2", "--db", db_url, "--json")
        assert code == 0, err
        assert len(stub.requests) == 4  # every answer came from the cache
        events = [json.loads(line) for line in out.splitlines()]
        assert [e["reused"] for e in events if e["event"] == "item"] == [True] * 4
        assert events[-1]["reused"] == 4 and events[-1]["status"] == "completed"
        assert events[-1]["input_tokens"] == 40  # what the answers cost when given: arms stay comparable
        results = json.loads(cli_run("runs", "results", "sample-2", "--db", db_url, "-o", "json")[1])
        assert all(r["reused"] and r["attempts"] == 0 and r["correct"] for r in results)
        code, out, err = cli_run("run", "sample-2", "--db", db_url, "--no-table")
        assert "4 reused" in out

        third = RUN.replace("name: sample", "name: sample-3")
        write_manifests({"run3.yaml": third})
        assert cli_run("apply", str(root), "--db", db_url, "--auto-approve")[0] == 0
        code, out, err = cli_run("run", "sample-3", "--db", db_url, "--no-cache", "--json")
        assert code == 0, err
        assert len(stub.requests) == 8 and json.loads(out.splitlines()[-1])["reused"] == 0
        assert len(_rows(db_url)) == 4  # the same keys: the first answers stay

        # a setting that reaches the model: a miss
        root = write_manifests({"config.yaml": config.replace("temperature: 0.0", "temperature: 0.5"), "run4.yaml": RUN.replace("name: sample", "name: sample-4")})
        assert cli_run("apply", str(root), "--db", db_url, "--auto-approve", "--no-prune")[0] == 0
        code, out, err = cli_run("run", "sample-4", "--db", db_url, "--json")
        assert code == 0, err
        assert len(stub.requests) == 12 and json.loads(out.splitlines()[-1])["reused"] == 0
        assert {r["temperature"] for r in stub.requests[8:]} == {0.5}


def test_only_valid_answers_are_cached(write_manifests, cli_run, fake_model, sqlite_url: str) -> None:
    fake_model(lambda p: {"category": "urgent", "confidence": 5} if "Export" in p else keyword_classifier(p))
    root = write_manifests({"config.yaml": CONFIG, "run.yaml": RUN})
    assert cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve")[0] == 0
    assert cli_run("run", "sample", "--db", sqlite_url)[0] == 100
    assert sorted(r["output"]["category"] for r in _rows(sqlite_url)) == ["bug", "feature", "question"]


def _changed(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "-changed"
    if isinstance(value, tuple):
        return value[:-1] if value else (Example("x", "y"),)
    if isinstance(value, dict):
        return {**value, "added": 1}
    return "set"


@pytest.mark.parametrize("part", ["provider", "agent", "task"])
def test_every_port_field_is_in_the_key_unless_it_never_reaches_the_model(part: str) -> None:
    """A field added to a port later is in the key from the start (a needless miss at worst, never a wrong hit)."""
    from dataclasses import fields

    configs = {"provider": ProviderConfig("p", "openai", "http://x/v1", api_key="sk"), "agent": BASE_AGENT, "task": BASE_TASK}
    assert set(answer_cache.NOT_SENT[part]) <= {f.name for f in fields(configs[part])}

    def key(**override: Any) -> tuple[str, str]:
        c = {**configs, **override}
        return (
            answer_cache.settings_sha256(answer_cache.request_settings(c["provider"], c["agent"], c["task"], "native")),
            answer_cache.messages_sha256(c["agent"], c["task"], "native", PROMPT),
        )

    base = key()
    for f in fields(configs[part]):
        changed = replace(configs[part], **{f.name: _changed(getattr(configs[part], f.name))})
        in_key = key(**{part: changed}) != base
        reaches = f.name not in answer_cache.NOT_SENT[part] or (part, f.name) in {("agent", "system_prompt"), ("agent", "examples"), ("task", "name")}
        assert in_key == reaches, f"{part}.{f.name}"
