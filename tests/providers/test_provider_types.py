"""Anthropic, Google and OpenAI-compatible providers end to end, each against a server on 127.0.0.1
that checks its API's wire format (tests/providers/wire.py): validation with the API's own
authentication, `providers models` (with paging), a structured-output run, `reconciler test`, the
model check, costs and the run snapshot."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest

from tests.providers.wire import Reply, WireStub, serve_api
from tests.runs.conftest import CLASSIFY_TASK, RUN, keyword_classifier

pytestmark = pytest.mark.usefixtures("real_llm_requests")

KEY = "sk-wire-5e1f0c2a9b"


@dataclass(frozen=True)
class Case:
    type: str
    api: str
    model: str  # the agent's model_name
    listed: tuple[str, ...]  # what the server lists (more than one page: PAGE is 2)
    mode: str  # the structured output the API gets: native JSON schema, or the schema in the prompt
    cost: float  # of the 4-item run (40 input / 20 output tokens), from genai-prices
    key: bool = True


CASES = [
    # claude-haiku-4-5 is an alias: the list holds the dated id; list price $1 / $5 per MTok
    Case("anthropic", "anthropic", "claude-haiku-4-5", ("claude-opus-4-5-20251101", "claude-sonnet-4-6", "claude-haiku-4-5-20251001"),
         "native", (40 * 1.0 + 20 * 5.0) / 1e6),
    # list price $0.30 / $2.50 per MTok
    Case("google", "google", "gemini-2.5-flash", ("gemini-2.0-flash", "gemini-2.5-pro", "gemini-2.5-flash", "text-embedding-004"),
         "native", (40 * 0.3 + 20 * 2.5) / 1e6),
    # a vLLM-style server: any OpenAI-compatible API, the schema goes in the prompt; genai-prices does not know it
    Case("openai-compatible", "openai", "Qwen/Qwen2.5-7B-Instruct", ("Qwen/Qwen2.5-7B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"),
         "prompted", 0.0, key=False),
    Case("openai-compatible", "openai", "Qwen/Qwen2.5-7B-Instruct", ("Qwen/Qwen2.5-7B-Instruct",), "prompted", 0.0),
]
IDS = ["anthropic", "google", "openai-compatible", "openai-compatible-with-key"]


def _answer(prompt: str, n: int) -> dict[str, Any]:
    return keyword_classifier(prompt)


def manifests(case: Case, base_url: str, model: str | None = None) -> str:
    key = ", api_key: {from_env: WIRE_API_KEY}" if case.key else ""
    return f"""
apiVersion: reconciler/v1
kind: Provider
metadata: {{name: remote}}
spec: {{type: {case.type}, base_url: "{base_url}"{key}}}
---
apiVersion: reconciler/v1
kind: Agent
metadata: {{name: classifier}}
spec: {{provider: remote, model_name: "{model or case.model}", system_prompt: Classify the message., temperature: 0.0}}
""" + CLASSIFY_TASK


ENV = {"WIRE_API_KEY": KEY}


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_validate_list_run_and_test_against_the_wire_format(case: Case, write_manifests, cli_run, sqlite_url: str) -> None:
    stub = WireStub(case.api, KEY if case.key else None, case.listed, _answer)  # type: ignore[arg-type]
    with serve_api(stub):
        root = write_manifests({"config.yaml": manifests(case, stub.base_url), "run.yaml": RUN})
        code, out, err = cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve", "--wait-validation", env=ENV)
        assert code == 0, out + err
        n = len(case.listed)
        assert f"remote: connected ({n} model{'s' if n != 1 else ''})" in out  # every page was followed
        listings = [r for r in stub.requests if r.method == "GET"]
        assert len(listings) == (len(case.listed) + 1) // 2 if case.api != "openai" else len(listings) == 1

        code, out, err = cli_run("providers", "models", "remote", "--db", sqlite_url)
        assert code == 0, err
        assert out.split() == [f"models/{m}" if case.api == "google" else m for m in case.listed]

        agents = json.loads(cli_run("get", "agents", "--db", sqlite_url, "-o", "json")[1])
        assert [(a["name"], a["model_status"]) for a in agents] == [("classifier", "served")]

        code, out, err = cli_run("run", "sample", "--db", sqlite_url)
        assert code == 0, err
        assert "completed — 4/4 valid, 0 failed, accuracy 100%" in out
        assert stub.modes == [case.mode] * 4

        code, out, err = cli_run("test", "classifier", "--prompt", "Please add dark mode", "--db", sqlite_url)
        assert code == 0, err
        assert json.loads(out) == {"category": "feature", "confidence": 80}
        assert f"provider remote ({case.type})" in err and "task classify (the agent's only task)" in err
    assert stub.violations == []

    shown = json.loads(cli_run("runs", "show", "sample", "--db", sqlite_url, "-o", "json")[1])
    assert shown["config_snapshot"]["provider"] == {"name": "remote", "type": case.type, "base_url": stub.base_url}
    assert (shown["input_tokens"], shown["output_tokens"]) == (40, 20)
    assert shown["cost_estimate"] == pytest.approx(case.cost)
    chats = stub.chats()
    assert len(chats) == 5
    if case.api == "anthropic":
        assert all(c.headers["x-api-key"] == KEY and "authorization" not in c.headers for c in chats)
        assert all(c.body["system"] for c in chats) and all(c.body["max_tokens"] == 4096 for c in chats)
    elif case.api == "google":
        assert all(c.headers["x-goog-api-key"] == KEY for c in chats)
        assert all(c.body["systemInstruction"]["parts"][0]["text"].startswith("Classify the message.") for c in chats)
    else:
        expected = f"Bearer {KEY}" if case.key else "Bearer api-key-not-set"  # pydantic-ai's placeholder for a keyless server
        assert {c.headers["authorization"] for c in chats} == {expected}
        systems = [" ".join(m["content"] for m in c.body["messages"] if m["role"] == "system") for c in chats]
        assert all("Classify the message." in text and '"confidence"' in text for text in systems)  # the schema is in the instructions


@pytest.mark.parametrize("case", CASES[:3], ids=IDS[:3])
def test_a_model_the_provider_does_not_serve_is_refused_before_sending(case: Case, write_manifests, cli_run, sqlite_url: str) -> None:
    stub = WireStub(case.api, KEY if case.key else None, case.listed, _answer)  # type: ignore[arg-type]
    with serve_api(stub):
        root = write_manifests({"config.yaml": manifests(case, stub.base_url, model="no-such-model"), "run.yaml": RUN})
        code, out, err = cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve", env=ENV)
        assert code == 0, err  # the apply is done; the check warns
        served = ", ".join(f"models/{m}" if case.api == "google" else m for m in case.listed)
        message = f"agent 'classifier': model 'no-such-model' is not served by provider 'remote' ({case.type}); it serves: {served}"
        assert f"warning: {message}" in err

        agents = json.loads(cli_run("get", "agents", "--db", sqlite_url, "-o", "json")[1])
        assert (agents[0]["model_status"], agents[0]["served_models"]) == ("missing", list(served.split(", ")))
        table = cli_run("get", "agents", "--db", sqlite_url)[1]
        assert "MODEL_STATUS" in table and "missing" in table

        code, out, err = cli_run("run", "sample", "--db", sqlite_url)
        assert code == 1 and f"error: run 'sample' cannot start: {message}" in err
        code, out, err = cli_run("test", "classifier", "--prompt", "hi", "--db", sqlite_url)
        assert code == 1 and f"error: agent 'classifier' cannot be tested: {message}" in err
        assert stub.chats() == []  # nothing was sent

        code, out, err = cli_run("providers", "check", "--db", sqlite_url)
        assert code == 1 and f"warning: {message}" in err
        assert "1 active agent use a model its provider does not serve: classifier" in err
        code, out, err = cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve", "--wait-validation", env=ENV)
        assert code == 0 and "No changes" in out  # an unchanged plan applies nothing and checks nothing

        # once the agent names a served model, it runs
        (root / "config.yaml").write_text(manifests(case, stub.base_url))
        code, out, err = cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve", "--wait-validation", env=ENV)
        assert code == 0 and "warning" not in err, err
        assert cli_run("run", "sample", "--db", sqlite_url)[0] == 0
    assert stub.violations == []


@pytest.mark.parametrize("case", CASES[:2] + CASES[3:], ids=IDS[:2] + IDS[3:])
def test_a_wrong_key_fails_validation_with_the_apis_own_answer(case: Case, write_manifests, cli_run, sqlite_url: str) -> None:
    stub = WireStub(case.api, "sk-the-right-one-000", case.listed, _answer)  # type: ignore[arg-type]
    with serve_api(stub):
        root = write_manifests({"config.yaml": manifests(case, stub.base_url)})
        code, out, err = cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve", "--wait-validation", env=ENV)
    status = 400 if case.api == "google" else 401  # Gemini answers a bad key with 400 API_KEY_INVALID
    assert code == 1
    assert f"remote: error: authentication failed (HTTP {status})" in out and "the API key was rejected" in out
    assert KEY not in out + err
    agents = json.loads(cli_run("get", "agents", "--db", sqlite_url, "-o", "json")[1])
    assert agents[0]["model_status"] == "unknown"  # no list to check against


@pytest.mark.parametrize(
    ("case", "error"),
    [
        (CASES[0], "Reply(529)"),
        (CASES[1], "Reply(503)"),
    ],
    ids=["anthropic-overloaded", "google-unavailable"],
)
def test_server_errors_of_each_api_are_transient(case: Case, error: str, write_manifests, cli_run, sqlite_url: str) -> None:
    """Each API's own overloaded/unavailable answer is retried, then leaves the item unfinished."""
    failing = {"on": True}
    status = int(error[6:9])

    def answer(prompt: str, n: int) -> dict[str, Any] | Reply:
        return Reply(status) if failing["on"] and "Export" in prompt else keyword_classifier(prompt)

    stub = WireStub(case.api, KEY, case.listed, answer)  # type: ignore[arg-type]
    with serve_api(stub):
        root = write_manifests({"config.yaml": manifests(case, stub.base_url), "run.yaml": RUN})
        assert cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve", env=ENV)[0] == 0
        code, out, err = cli_run("run", "sample", "--db", sqlite_url)
        assert code == 1 and "interrupted — 3/4 valid, 0 failed, 1 unfinished" in out, out + err
        assert sum(1 for c in stub.chats() if "Export" in json.dumps(c.body)) == 3  # 1 + max_retries 2
        failing["on"] = False
        code, out, err = cli_run("run", "sample", "--db", sqlite_url)
        assert code == 0 and "completed — 4/4 valid" in out, err
    assert stub.violations == []


def test_watch_reports_a_model_the_provider_does_not_serve(write_manifests, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """watch has no terminal to warn on: the model check `apply` prints is in the applied event."""
    from reconciler.gitops.watch import Watcher, WatchConfig

    case = CASES[2]
    monkeypatch.setenv("WIRE_API_KEY", KEY)
    stub = WireStub(case.api, KEY if case.key else None, case.listed, _answer)  # type: ignore[arg-type]
    with serve_api(stub):
        root = write_manifests({"config.yaml": manifests(case, stub.base_url, model="no-such-model")})
        watcher = Watcher(WatchConfig(paths=(str(root),), db=sqlite_url))
        try:
            event = watcher.reconcile("startup")
            assert event is not None and event.outcome == "applied"
            message = f"agent 'classifier': model 'no-such-model' is not served by provider 'remote' ({case.type}); it serves: {', '.join(case.listed)}"
            assert event.to_dict()["missing_models"] == [
                {"agent": "classifier", "provider": "remote", "model_name": "no-such-model", "model_status": "missing",
                 "served_models": list(case.listed), "message": message,
                 "hint": "fix model_name in Agent 'classifier' and apply, or make the provider serve it and run `reconciler providers check remote`"}
            ]
            assert f"    warning: {message}" in event.render_text()

            (root / "config.yaml").write_text(manifests(case, stub.base_url))
            fixed = watcher.reconcile("files", ("config.yaml",))
            assert fixed is not None and fixed.outcome == "applied" and fixed.to_dict()["missing_models"] == []
        finally:
            watcher.close()
    assert stub.chats() == []
