"""Pure parts of the runner and run metrics: backoff, batching, prompts, accuracy, status, cost, and
whether the process that ran a run is gone."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from reconciler.runs import metrics, store
from reconciler.runs.runner import ResultSink, RetryPolicy


@pytest.mark.parametrize(
    ("retry", "retry_after", "low", "high"),
    [
        pytest.param(0, None, 0.5, 1.0, id="first"),
        pytest.param(3, None, 4.0, 8.0, id="exponential"),
        pytest.param(10, None, 15.0, 30.0, id="capped"),
        pytest.param(0, 5.0, 5.0, 5.0, id="retry-after-wins"),
        pytest.param(0, 1000.0, 120.0, 120.0, id="retry-after-capped"),
    ],
)
def test_backoff_with_jitter(retry: int, retry_after: float | None, low: float, high: float) -> None:
    policy = RetryPolicy(max_retries=3, base_seconds=1.0)
    delays = {policy.delay(retry, retry_after) for _ in range(50)}
    assert all(low <= d <= high for d in delays)
    if low != high:
        assert len(delays) > 1  # jitter: workers do not retry in lockstep


def test_sink_batches_and_coalesces_while_a_write_runs() -> None:
    release, batches = threading.Event(), []

    def slow_write(batch: list) -> None:
        release.wait(30)
        batches.append(list(batch))

    sink = ResultSink(slow_write, batch=3, max_age=3600)
    for i in range(8):
        sink.add(i)  # type: ignore[arg-type]
    release.set()  # the first batch was still being written: the others waited for one next write
    sink.close()
    assert batches == [[0, 1, 2], [3, 4, 5, 6, 7]]


def test_sink_beats_when_idle_and_close_writes_the_rest() -> None:
    batches: list[list[int]] = []
    sink = ResultSink(lambda b: batches.append(list(b)), batch=100, max_age=3600, beat_every=0)
    sink.tick()  # nothing pending: an empty write, which renews the heartbeat
    sink.add(1)  # type: ignore[arg-type]
    sink.close()
    assert batches == [[], [1]]


def test_sink_write_failure_is_raised() -> None:
    def broken(batch: list) -> None:
        raise OSError("disk full")

    sink = ResultSink(broken, batch=1, max_age=3600)
    sink.add(0)  # type: ignore[arg-type]
    with pytest.raises(OSError, match="disk full"):
        sink.close()


@pytest.mark.parametrize(
    ("item", "template", "expected", "prompt"),
    [
        pytest.param({"text": "hi", "category": "bug"}, "Message: {text}", "category", "Message: hi", id="template"),
        pytest.param({"input": "plain"}, None, None, "plain", id="bare-string"),
        pytest.param({"text": "hi", "category": "bug"}, None, "category", "hi", id="expected-hidden"),
        pytest.param({"a": 1, "b": 2}, None, None, '{"a": 1, "b": 2}', id="fields-as-json"),
    ],
)
def test_render_prompt(item: dict, template: str | None, expected: str | None, prompt: str) -> None:
    assert metrics.render_prompt(item, template, expected) == prompt


def test_accuracy_counts_failed_items_as_wrong() -> None:
    valid = [({"category": "bug"}, {"category": "Bug"}), ({"category": "bug"}, {"category": "feature"}), ({"category": "question"}, "question")]
    assert metrics.accuracy(valid, 4, "category") == 0.5  # the fourth item failed
    assert metrics.accuracy(valid, 4, None) is None
    assert metrics.accuracy([], 0, "category") is None


@pytest.mark.parametrize(
    ("total", "ok", "failed", "status"),
    [(3, 3, 0, "completed"), (3, 2, 1, "partial"), (3, 0, 3, "failed"), (3, 2, 0, "interrupted"), (3, 0, 0, "interrupted"), (3, 1, 1, "interrupted")],
    ids=["all-valid", "some-failed", "none-valid", "unfinished", "nothing-done", "unfinished-with-failures"],
)
def test_final_status(total: int, ok: int, failed: int, status: str) -> None:
    assert metrics.final_status(total, ok, failed) == status


@pytest.mark.parametrize(
    ("provider_type", "model", "base_url", "tokens", "expected"),
    [
        ("llamacpp", "gemma3-270m", None, (1000, 1000), 0.0),
        ("ollama", "llama3", None, (1000, 1000), 0.0),
        ("openai", "no-such-model", None, (1000, 1000), 0.0),
        ("openai", "gpt-4o-mini", None, (1_000_000, 0), 0.15),
        ("anthropic", "claude-sonnet-4-5", None, (100_000, 100_000), 0.3 + 1.5),  # list price $3 / $15 per MTok
        ("google", "gemini-2.5-flash", None, (1_000_000, 0), 0.3),
        ("openai-compatible", "openai/gpt-4o-mini", "https://openrouter.ai/api/v1", (1_000_000, 0), 0.15),
        ("openai-compatible", "llama3", "http://127.0.0.1:8000/v1", (1_000_000, 1_000_000), 0.0),  # a server genai-prices does not know
    ],
    ids=["llamacpp", "ollama", "unknown-model", "openai", "anthropic", "google", "openrouter", "own-vllm"],
)
def test_cost(provider_type: str, model: str, base_url: str | None, tokens: tuple[int, int], expected: float) -> None:
    assert metrics.estimate_cost(provider_type, model, None, *tokens, base_url=base_url) == pytest.approx(expected)


def test_cost_with_the_agents_own_prices() -> None:
    assert metrics.estimate_cost("llamacpp", "x", {"input_per_mtok": 2.0, "output_per_mtok": 4.0}, 500_000, 250_000) == pytest.approx(2.0)


def test_snapshot_has_no_secret_and_a_stable_hash() -> None:
    from reconciler.llm.ports import AgentConfig, ProviderConfig, TaskConfig

    provider = ProviderConfig("p", "openai", "https://api.example/v1", api_key="sk-secret")
    snap = metrics.config_snapshot(provider, AgentConfig("a", "m", "prompt"), TaskConfig("t", {"type": "object"}))
    assert "sk-secret" not in repr(snap)
    again = metrics.config_snapshot(provider, AgentConfig("a", "m", "prompt"), TaskConfig("t", {"type": "object"}))
    assert metrics.snapshot_sha256(snap) == metrics.snapshot_sha256(again)
    other = metrics.config_snapshot(provider, AgentConfig("a", "m", "prompt 2"), TaskConfig("t", {"type": "object"}))
    assert metrics.snapshot_sha256(snap) != metrics.snapshot_sha256(other)


NOW = datetime(2025, 1, 1, tzinfo=timezone.utc)
HOST = socket.gethostname()


@pytest.mark.parametrize(
    ("status", "runner", "beat_age", "gone"),
    [
        pytest.param("running", f"{HOST}:{2**31 - 1}", 0, True, id="same-host-pid-dead"),
        pytest.param("running", f"{HOST}:{os.getpid()}", 3600, False, id="this-process"),
        pytest.param("running", "elsewhere:12", 10, False, id="other-host-fresh-heartbeat"),
        pytest.param("running", "elsewhere:12", 3600, True, id="other-host-lease-expired"),
        pytest.param("running", "elsewhere:12", None, True, id="other-host-no-heartbeat"),
        pytest.param("completed", None, None, False, id="finished"),
    ],
)
def test_owner_gone(status: str, runner: str | None, beat_age: int | None, gone: bool) -> None:
    beat = None if beat_age is None else NOW - timedelta(seconds=beat_age)
    record = store.RunRecord(uuid.uuid4(), "r", status, {}, None, None, runner, beat, None)
    assert store.owner_gone(record, now=NOW) is gone


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="zombies are told apart through /proc")
def test_a_killed_unreaped_process_counts_as_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        record = store.RunRecord(uuid.uuid4(), "r", "running", {}, None, None, f"{HOST}:{child.pid}", None, None)
        assert not store.owner_gone(record)
        child.send_signal(signal.SIGKILL)
        stat = Path(f"/proc/{child.pid}/stat")
        while stat.exists() and stat.read_bytes().rsplit(b")", 1)[1][1:2] != b"Z":  # not reaped: a zombie
            time.sleep(0.01)
        assert store.owner_gone(record)
    finally:
        child.kill()
        child.wait()


# --- the outage breaker -----------------------------------------------------------------------


class _ScriptedAgent:
    """An LLMAgent whose answers per prompt follow a script of outcomes (an exception or a value)."""

    config_sha256 = "0" * 64

    def __init__(self, script: dict[str, list[object]]) -> None:
        self.script = {k: list(v) for k, v in script.items()}
        self.calls: list[str] = []

    async def run(self, prompt: str):  # type: ignore[no-untyped-def]
        from reconciler.llm.ports import AgentResult

        self.calls.append(prompt)
        outcome = self.script[prompt].pop(0) if len(self.script[prompt]) > 1 else self.script[prompt][0]
        if isinstance(outcome, BaseException):
            raise outcome
        return AgentResult(outcome)


def _execute(agent: _ScriptedAgent, prompts: list[str], limit: int, retries: int = 2, concurrency: int = 1):  # type: ignore[no-untyped-def]
    import asyncio

    from reconciler.runs.runner import WorkItem, execute

    stored: list = []
    seen: list = []
    sink = ResultSink(lambda batch: stored.extend(batch), batch=1, max_age=0)
    policy = RetryPolicy(max_retries=retries, base_seconds=0.001, max_consecutive_failures=limit)
    items = [WorkItem(i, {"p": p}, p) for i, p in enumerate(prompts)]
    outcome = asyncio.run(execute(agent, items, concurrency=concurrency, policy=policy, sink=sink, on_item=seen.append))
    return outcome, sorted(o.index for o in stored), {o.index: o for o in seen}


def test_transient_failures_in_a_row_across_items_stop_the_run() -> None:
    from reconciler.llm.ports import RetryableError

    down = RetryableError("HTTP 503")
    agent = _ScriptedAgent({"a": ["ok"], "b": [down], "c": [down], "d": ["ok"]})
    outcome, stored, seen = _execute(agent, ["a", "b", "c", "d"], limit=4)
    assert stored == [0]  # b and c got only transient errors: not stored, so a resume retries them
    assert (outcome.processed, outcome.unanswered) == (1, 2)
    assert outcome.stopped_reason == "4 transient failures in a row (last: HTTP 503)"
    assert agent.calls == ["a", "b", "b", "b", "c"]  # 3 tries of b, the 4th failure in a row is c's first; d is never sent
    assert seen[1].transient and seen[2].transient and (seen[1].error, seen[2].error) == ("gave up after 3 tries: HTTP 503", "HTTP 503")


def test_an_answer_resets_the_count_and_invalid_output_is_the_models_failure() -> None:
    from reconciler.llm.ports import InvalidOutput, RetryableError

    down = RetryableError("HTTP 500")
    agent = _ScriptedAgent({"a": [down, down, "ok"], "b": [down, InvalidOutput("not in the schema")], "c": [down, down, "ok"]})
    outcome, stored, seen = _execute(agent, ["a", "b", "c"], limit=3)
    assert outcome.stopped_reason is None and stored == [0, 1, 2]
    assert seen[0].valid and not seen[1].valid and not seen[1].transient and seen[1].error == "not in the schema"


def test_a_429_counts_only_when_its_item_gives_up() -> None:
    from reconciler.llm.ports import RateLimited

    slow = RateLimited("HTTP 429", retry_after=0)
    agent = _ScriptedAgent({"a": [slow], "b": [slow], "c": ["ok"]})
    outcome, stored, _ = _execute(agent, ["a", "b", "c"], limit=3)
    assert outcome.stopped_reason is None and outcome.unanswered == 2 and stored == [2]  # 2 counted, not 6
    outcome, stored, _ = _execute(_ScriptedAgent({"a": [slow], "b": [slow], "c": ["ok"]}), ["a", "b", "c"], limit=2)
    assert outcome.stopped_reason == "2 transient failures in a row (last: HTTP 429)" and stored == []
