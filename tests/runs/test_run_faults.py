"""Fault behaviour against a real HTTP stub on 127.0.0.1: rate limits, server errors, bad JSON, a
provider that is down (the run stops, then resumes), and an unvalidated provider for `test`."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.runs.conftest import RUN, STUB_CONFIG, keyword_classifier, spawn_run
from tests.stub_openai import Reply, StubServer

pytestmark = pytest.mark.usefixtures("real_llm_requests")


def _prompt(request: dict) -> str:
    return next(m["content"] for m in request["messages"] if m["role"] == "user")


def _apply(write_manifests, cli_run, db: str, base_url: str) -> None:  # type: ignore[no-untyped-def]
    root = write_manifests({"config.yaml": STUB_CONFIG.replace("BASE", base_url), "run.yaml": RUN})
    code, _, err = cli_run("apply", str(root), "--db", db, "--auto-approve")
    assert code == 0, err


def _results(cli_run, db: str) -> list[dict]:  # type: ignore[no-untyped-def]
    return json.loads(cli_run("runs", "results", "sample", "--db", db, "-o", "json")[1])


def test_rate_limit_with_retry_after_is_retried(write_manifests, cli_run, sqlite_url: str) -> None:
    def behaviour(request: dict, n: int) -> Reply | dict:
        if n <= 2:
            return Reply(429, headers={"Retry-After": "0"}, body={"error": {"message": "slow down", "type": "rate_limit"}})
        return keyword_classifier(_prompt(request))

    with StubServer(behaviour) as stub:
        _apply(write_manifests, cli_run, sqlite_url, stub.base_url)
        code, out, err = cli_run("run", "sample", "--db", sqlite_url)
        assert code == 0, err
        assert "completed — 4/4 valid" in out
        assert len(stub.requests) == 6
        assert stub.requests[0]["response_format"]["type"] == "json_schema"  # native structured output
    assert sum(r["attempts"] for r in _results(cli_run, sqlite_url)) == 6


def test_invalid_json_fails_an_item_but_server_errors_leave_it_unfinished(write_manifests, cli_run, sqlite_url: str) -> None:
    """A 500 is transient: the item that only ever got 500s is not the model's failure; it stays
    unfinished (the run is interrupted, exit 1) and a plain `run` sends it again, and only it."""
    broken = True

    def behaviour(request: dict, n: int) -> Reply | dict | str:
        prompt = _prompt(request)
        if "Export" in prompt and broken:
            return Reply(500)
        if "dark mode" in prompt:
            return '{"category": "feature", "confid'
        return keyword_classifier(prompt)

    with StubServer(behaviour) as stub:
        _apply(write_manifests, cli_run, sqlite_url, stub.base_url)
        code, out, err = cli_run("run", "sample", "--db", sqlite_url)
        assert code == 1
        assert "interrupted — 2/4 valid, 1 failed, 1 unfinished" in out
        assert "1 item got no answer, only transient errors (last: gave up after 3 tries: status_code: 500" in err
        assert "1 of 4 items unfinished; run `reconciler run sample` again to resume" in err
        by_index = {r["item"]: r for r in _results(cli_run, sqlite_url)}
        assert sorted(by_index) == [0, 1, 2]  # item 3 is not stored as failed
        assert not by_index[1]["valid"] and "no valid output after 3 attempts" in by_index[1]["error"]
        broken = False
        sent = len(stub.requests)
        code, out, err = cli_run("run", "sample", "--db", sqlite_url)
        assert code == 100, err  # partial: finished, the invalid answer is the model's failure
        assert "partial — 3/4 valid, 1 failed" in out
        assert [_prompt(r) for r in stub.requests[sent:]] == ["Message: Export is broken"]


def test_schema_invalid_answers_are_retried_with_the_error_then_recorded(write_manifests, cli_run, sqlite_url: str) -> None:
    """Through HTTP: an answer outside the schema is sent back with the validation error; one that
    stays invalid after every retry is stored as failed with the reason and its attempts."""
    feedback: list[str] = []

    def behaviour(request: dict, n: int) -> dict:
        prompt = _prompt(request)
        retried = [m for m in request["messages"][1:] if m["role"] in ("user", "tool") and m["content"] != prompt]
        if retried:
            feedback.append(json.dumps(retried))
        if "Export" in prompt:
            return {"category": "broken", "confidence": 50}  # never valid
        if "dark mode" in prompt and not retried:
            return {"category": "feature", "confidence": 500}  # valid once told why
        return keyword_classifier(prompt)

    with StubServer(behaviour) as stub:
        _apply(write_manifests, cli_run, sqlite_url, stub.base_url)
        code, out, err = cli_run("run", "sample", "--db", sqlite_url)
    assert code == 100, err
    assert "partial — 3/4 valid, 1 failed" in out
    by_index = {r["item"]: r for r in _results(cli_run, sqlite_url)}
    assert by_index[1]["valid"] and by_index[1]["attempts"] == 2 and by_index[1]["output"]["confidence"] != 500
    assert not by_index[3]["valid"] and by_index[3]["attempts"] == 3
    assert "no valid output after 3 attempts" in by_index[3]["error"] and "'broken' is not one of" in by_index[3]["error"]
    assert by_index[3]["input_tokens"] == 30  # every attempt is counted
    assert any("500 is greater than the maximum of 100" in f for f in feedback)
    assert any("'broken' is not one of" in f for f in feedback)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_provider_down_stops_the_run_and_resume_finishes_it(write_manifests, cli_run, db_url: str) -> None:
    port = _free_port()
    _apply(write_manifests, cli_run, db_url, f"http://127.0.0.1:{port}/v1")
    code, out, err = cli_run("run", "sample", "--db", db_url)
    assert code == 1
    assert "Run sample: interrupted — 0/4 valid, 0 failed, 4 unfinished" in out
    assert "stopped: provider 'stub' (openai) looks down: 5 transient failures in a row (last: cannot reach the provider" in err
    assert "again to resume" in err
    listed = json.loads(cli_run("runs", "list", "--db", db_url, "-o", "json")[1])
    assert listed[0]["status"] == "interrupted"

    with StubServer(lambda request, n: keyword_classifier(_prompt(request)), port=port) as stub:
        code, out, err = cli_run("run", "sample", "--db", db_url)
        assert code == 0, err
        assert "completed — 4/4 valid" in out
        assert len(stub.requests) == 4


def _stored(db: str) -> list[int]:
    from sqlalchemy import select

    from reconciler.state.db import open_engine
    from reconciler.state.tables import run_results

    engine = open_engine(db, create=False)
    try:
        with engine.connect() as conn:
            return sorted(conn.execute(select(run_results.c.item_index)).scalars())
    finally:
        engine.dispose()


def _listed(cli_run, db: str) -> dict:  # type: ignore[no-untyped-def]
    return json.loads(cli_run("runs", "list", "--db", db, "-o", "json")[1])[0]


def test_killed_run_is_listed_interrupted_and_resumes(write_manifests, cli_run, db_url: str, tmp_path: Path) -> None:
    """SIGKILL the process executing a run: it is listed as interrupted (not running), and running it
    again processes only the unfinished items."""
    gate = threading.Event()  # the first two answers come at once, the others wait for the kill

    def behaviour(request: dict, n: int) -> dict:
        if n > 2:
            gate.wait(120)
        return keyword_classifier(_prompt(request))

    with StubServer(behaviour) as stub:
        _apply(write_manifests, cli_run, db_url, stub.base_url)
        proc = spawn_run("sample", db_url, tmp_path)
        try:
            deadline = time.monotonic() + 120
            while len(_stored(db_url)) < 2:  # stored within a second (the sink's max_age)
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.05)
            running = _listed(cli_run, db_url)
            assert running["status"] == "running"
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        gate.set()

        listed = _listed(cli_run, db_url)
        assert listed["status"] == "interrupted" and listed["succeeded"] == 2
        assert "reconciler run sample" in listed["error"] and f":{proc.pid})" in listed["error"]
        code, table, err = cli_run("runs", "list", "--db", db_url)
        assert code == 0 and "interrupted" in table and "to resume" in err
        shown = json.loads(cli_run("runs", "show", "sample", "--db", db_url, "-o", "json")[1])
        assert shown["status"] == "interrupted" and shown["runner_alive"] is False

        requests_before = len(stub.requests)
        code, out, err = cli_run("run", "sample", "--db", db_url, "--json")
    assert code == 0, err
    summary = json.loads(out.splitlines()[-1])
    assert summary["status"] == "completed" and summary["processed_now"] == 2
    assert len(stub.requests) - requests_before == 2  # the two unfinished items, nothing else
    assert _stored(db_url) == [0, 1, 2, 3]  # nothing lost, nothing duplicated
    assert _listed(cli_run, db_url)["status"] == "completed"


def test_agent_test_refuses_unvalidated_provider(write_manifests, cli_run, sqlite_url: str) -> None:
    _apply(write_manifests, cli_run, sqlite_url, "http://127.0.0.1:9/v1")
    code, out, err = cli_run("test", "classifier", "--prompt", "hi", "--db", sqlite_url)
    assert code == 1
    assert "provider 'stub' is not validated (status error: connection refused" in err


def test_ollama_provider_type_goes_through_the_same_path(write_manifests, cli_run, sqlite_url: str) -> None:
    with StubServer(lambda request, n: keyword_classifier(_prompt(request))) as stub:
        config = STUB_CONFIG.replace("type: openai", "type: ollama").replace("BASE", stub.base_url.removesuffix("/v1"))
        root = write_manifests({"config.yaml": config, "run.yaml": RUN})
        assert cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve")[0] == 0
        code, out, err = cli_run("run", "sample", "--db", sqlite_url)
        assert code == 0, err
        assert "completed — 4/4 valid" in out and "cost $0.0000" in out
        assert {r["model"] for r in stub.requests} == {"gpt-4o-mini"}


def test_known_model_cost_and_price_override(write_manifests, cli_run, sqlite_url: str) -> None:
    with StubServer(lambda request, n: keyword_classifier(_prompt(request))) as stub:
        config = STUB_CONFIG.replace("BASE", stub.base_url)
        priced = config.replace("temperature: 0.0}", "temperature: 0.0, prices: {input_per_mtok: 1000000, output_per_mtok: 0}}")
        root = write_manifests({"config.yaml": config, "run.yaml": RUN})
        assert cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve")[0] == 0
        assert cli_run("run", "sample", "--db", sqlite_url)[0] == 0
        genai = json.loads(cli_run("runs", "show", "sample", "--db", sqlite_url, "-o", "json")[1])
        assert genai["input_tokens"] == 40 and genai["output_tokens"] == 20
        assert genai["cost_estimate"] == pytest.approx((40 * 0.15 + 20 * 0.6) / 1e6)  # gpt-4o-mini list price
        second = RUN.replace("name: sample", "name: sample-2")
        root = write_manifests({"config.yaml": priced, "run.yaml": second})
        assert cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve", "--no-prune")[0] == 0
        assert cli_run("run", "sample-2", "--db", sqlite_url)[0] == 0
        own = json.loads(cli_run("runs", "show", "sample-2", "--db", sqlite_url, "-o", "json")[1])
        assert own["cost_estimate"] == pytest.approx(40.0)
        assert own["config_sha256"] != genai["config_sha256"]


def test_api_key_is_sent_but_never_stored(write_manifests, cli_run, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-test-" + "x" * 24
    monkeypatch.setenv("STUB_API_KEY", secret)
    with StubServer(lambda request, n: keyword_classifier(_prompt(request))) as stub:
        config = STUB_CONFIG.replace('base_url: "BASE"}', f'base_url: "{stub.base_url}", api_key: {{from_env: STUB_API_KEY}}}}')
        root = write_manifests({"config.yaml": config, "run.yaml": RUN})
        code, _, err = cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve")
        assert code == 0, err
        code, out, err = cli_run("run", "sample", "--db", sqlite_url, "--json")
        assert code == 0, err
        assert set(stub.authorizations) == {f"Bearer {secret}"}
    shown = cli_run("runs", "show", "sample", "--db", sqlite_url, "-o", "json")[1]
    results = cli_run("runs", "results", "sample", "--db", sqlite_url, "-o", "json")[1]
    for text in (out, err, shown, results):
        assert secret not in text
    from pathlib import Path

    assert secret.encode() not in Path(sqlite_url.removeprefix("sqlite:///")).read_bytes()
