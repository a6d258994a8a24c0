"""An outage pauses a run: after N transient failures in a row across items the run stops taking
items, leaves them unfinished, is interrupted (exit 1) and a plain `reconciler run` finishes it,
sending no item twice. Against the OpenAI-wire stub on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter
from typing import Any

import pytest

from tests.providers.wire import Reply, WireStub, serve_api
from tests.runs.conftest import CLASSIFY_TASK, keyword_classifier

pytestmark = pytest.mark.usefixtures("real_llm_requests")

SIX = """
apiVersion: reconciler/v1
kind: Run
metadata: {name: six}
spec:
  assignment: classifier-classify
  prompt_template: "Message: {text}"
  expected: category
  concurrency: CONCURRENCY
  inputs:
    - {text: "one: it crashes", category: bug}
    - {text: "two: add dark mode", category: feature}
    - {text: "three: how do I log in?", category: question}
    - {text: "four: export crashes", category: bug}
    - {text: "five: add a button", category: feature}
    - {text: "six: where is it?", category: question}
"""


def _config(base_url: str) -> str:
    return f"""
apiVersion: reconciler/v1
kind: Provider
metadata: {{name: stub}}
spec: {{type: openai-compatible, base_url: "{base_url}"}}
---
apiVersion: reconciler/v1
kind: Agent
metadata: {{name: classifier}}
spec: {{provider: stub, model_name: small, temperature: 0.0}}
""" + CLASSIFY_TASK


class Outage:
    """Answers ``healthy_for`` requests, then fails every request (``how``) until ``recover()``."""

    def __init__(self, healthy_for: int, how: str = "500") -> None:
        self.healthy_for, self.how = healthy_for, how
        self.down = False
        self.answered: Counter[str] = Counter()  # prompt -> answers given (200s)
        self.lock = threading.Lock()

    def recover(self) -> None:
        self.down, self.healthy_for = False, 10**9

    def __call__(self, prompt: str, n: int) -> dict[str, Any] | Reply:
        with self.lock:
            if sum(self.answered.values()) >= self.healthy_for:
                self.down = True
            if not self.down:
                self.answered[prompt] += 1
                return keyword_classifier(prompt)
        if self.how == "429":
            return Reply(429, {"Retry-After": "0"}, {"error": {"message": "rate limited", "type": "rate_limit"}})
        return Reply(int(self.how))


def _apply(write_manifests: Any, cli_run: Any, db: str, base_url: str, concurrency: int = 1) -> None:
    root = write_manifests({"config.yaml": _config(base_url), "run.yaml": SIX.replace("CONCURRENCY", str(concurrency))})
    code, _, err = cli_run("apply", str(root), "--db", db, "--auto-approve")
    assert code == 0, err


def _stored(cli_run: Any, db: str) -> list[int]:
    return [r["item"] for r in json.loads(cli_run("runs", "results", "six", "--db", db, "-o", "json")[1])]


@pytest.mark.parametrize("how", ["500", "503", "429"], ids=["server-error", "unavailable", "rate-limited-after-retries"])
def test_an_outage_after_three_answers_pauses_the_run_and_a_plain_run_finishes_it(how: str, write_manifests, cli_run, db_url: str) -> None:
    outage = Outage(healthy_for=3, how=how)
    stub = WireStub("openai", None, ("small",), outage)
    with serve_api(stub):
        _apply(write_manifests, cli_run, db_url, stub.base_url)
        code, out, err = cli_run("run", "six", "--db", db_url)
        assert code == 1
        assert "Run six: interrupted — 3/6 valid, 0 failed, 3 unfinished" in out
        assert "3 of 6 items unfinished; run `reconciler run six` again to resume" in err
        assert _stored(cli_run, db_url) == [0, 1, 2]  # the items that got no answer are not stored as failed
        listed = json.loads(cli_run("runs", "list", "--db", db_url, "-o", "json")[1])[0]
        assert (listed["status"], listed["failed"]) == ("interrupted", 0)
        sent = [json.dumps(c.body) for c in stub.chats()]
        if how == "429":
            # throttling a backoff may resolve: a 429 counts only once its item's retries are spent, so
            # the three items give up (3 tries each) without adding up to an outage
            assert "3 items got no answer, only transient errors (last: gave up after 3 tries: status_code: 429" in err
            assert len(sent) == 3 + 3 * 3
        else:
            assert "stopped: provider 'stub' (openai-compatible) looks down: 5 transient failures in a row (last: " in err
            assert "looks down" in listed["error"]
            # 3 answers + item four's 3 attempts + item five's 2: the fifth failure in a row stops it; six is never sent
            assert len(sent) == 8 and not any("six: where" in s for s in sent)

        outage.recover()
        code, out, err = cli_run("run", "six", "--db", db_url)
        assert code == 0, err
        assert "Run six: completed — 6/6 valid, 0 failed, accuracy 100%" in out
    assert _stored(cli_run, db_url) == [0, 1, 2, 3, 4, 5]
    assert sorted(outage.answered.values()) == [1] * 6  # no item was answered twice
    assert stub.violations == []


def test_max_consecutive_failures_and_concurrency(write_manifests, cli_run, sqlite_url: str) -> None:
    """With 3 workers, the failures of several items count together; --max-consecutive-failures 2
    stops after the second, and every item not answered stays unfinished."""
    outage = Outage(healthy_for=2)
    stub = WireStub("openai", None, ("small",), outage)
    with serve_api(stub):
        _apply(write_manifests, cli_run, sqlite_url, stub.base_url, concurrency=3)
        code, out, _ = cli_run("run", "six", "--db", sqlite_url, "--max-consecutive-failures", "2", "--json")
        assert code == 1
        events = [json.loads(line) for line in out.splitlines()]
        summary = events[-1]
        assert (summary["status"], summary["items_succeeded"], summary["items_failed"]) == ("interrupted", 2, 0)
        assert "2 transient failures in a row" in summary["error"]
        unanswered = [e for e in events if e["event"] == "item" and e.get("transient")]
        assert unanswered and all(not e["valid"] and e["error"] for e in unanswered)
        # 2 answers, then at most the 3 items in flight when the breaker trips, each with its 3 attempts
        # (max_retries 2); without the breaker all 4 unanswered items would be tried: 2 + 4 * 3 = 14
        assert len(stub.chats()) <= 2 + 3 * 3
        outage.recover()
        assert cli_run("run", "six", "--db", sqlite_url)[0] == 0
    assert sorted(outage.answered.values()) == [1] * 6


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_connection_refused_and_reset_are_transient(write_manifests, cli_run, sqlite_url: str) -> None:
    """A server that is gone (refused) or drops the connection (reset) pauses the run the same way."""
    port = _closed_port()
    _apply(write_manifests, cli_run, sqlite_url, f"http://127.0.0.1:{port}/v1")
    code, out, err = cli_run("run", "six", "--db", sqlite_url)
    assert code == 1 and "interrupted — 0/6 valid, 0 failed, 6 unfinished" in out
    assert "looks down: 5 transient failures in a row (last: cannot reach the provider" in err

    with socket.socket() as listener:  # accepts, reads, and closes without answering
        listener.bind(("127.0.0.1", port))
        listener.listen(16)
        stop = threading.Event()

        def drop() -> None:
            listener.settimeout(0.2)
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                conn.recv(65536)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST on close
                conn.close()

        thread = threading.Thread(target=drop, daemon=True)
        thread.start()
        try:
            code, out, err = cli_run("run", "six", "--db", sqlite_url)
        finally:
            stop.set()
            thread.join(5)
    assert code == 1 and "interrupted — 0/6 valid, 0 failed, 6 unfinished" in out, err
    assert "looks down: 5 transient failures in a row" in err


def test_invalid_answers_reset_the_count_and_are_the_models_failures(write_manifests, cli_run, sqlite_url: str) -> None:
    """Answers outside the schema come from a provider that is up: they fail their items (kept, and
    redone only by --retry-failed), and the 500s between them never add up to an outage."""
    first_try: set[str] = set()

    def answer(prompt: str, n: int) -> dict[str, Any] | Reply:
        if prompt.startswith("Message:") and prompt not in first_try:  # each item's first request (not the feedback)
            first_try.add(prompt)
            return Reply(500)
        if "two" in prompt or "five" in prompt or not prompt.startswith("Message:"):
            return {"category": "not-a-category", "confidence": 1}
        return keyword_classifier(prompt)

    stub = WireStub("openai", None, ("small",), answer)
    with serve_api(stub):
        _apply(write_manifests, cli_run, sqlite_url, stub.base_url)
        code, out, err = cli_run("run", "six", "--db", sqlite_url, "--max-consecutive-failures", "2")
        assert code == 100, err  # finished: partial (some items failed)
        assert "partial — 4/6 valid, 2 failed" in out
        before = len(stub.chats())
        code, out, _ = cli_run("run", "six", "--db", sqlite_url)
        assert code == 100 and len(stub.chats()) == before  # a plain run does not redo the model's failures
        code, out, _ = cli_run("run", "six", "--db", sqlite_url, "--retry-failed")
        assert len(stub.chats()) > before
