"""A provider's rate limit is one limiter per process, shared by every run, arm and test that uses it
(also across event loops in threads, as `watch` runs them), and a 429 with Retry-After holds it back
for every caller. The limits are per minute; these tests shorten the minute (ratelimit.PERIOD_SECONDS)
and check, at a real server on 127.0.0.1, when the requests arrived."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import pytest

from reconciler.llm import ratelimit
from reconciler.llm.ports import ProviderConfig, RateLimit
from tests.providers.wire import Reply, WireStub, serve_api
from tests.runs.conftest import CLASSIFY_TASK, keyword_classifier

PERIOD = 0.5


@pytest.fixture
def short_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ratelimit, "PERIOD_SECONDS", PERIOD)
    monkeypatch.setattr(ratelimit, "_limiters", {})


def _max_in_window(times: list[float], window: float) -> int:
    """The most arrivals within any span shorter than ``window``."""
    times = sorted(times)
    return max(sum(1 for u in times[i:] if u - t < window) for i, t in enumerate(times))


def test_one_limiter_per_provider_name_replaced_when_its_limits_change(short_minute: None) -> None:
    a = ratelimit.limiter_for(ProviderConfig("p", "openai", rate_limit=RateLimit(10)))
    assert ratelimit.limiter_for(ProviderConfig("p", "openai", "http://elsewhere", rate_limit=RateLimit(10))) is a
    a.hold(5)
    b = ratelimit.limiter_for(ProviderConfig("p", "openai", rate_limit=RateLimit(20)))
    assert b is not a and b.requests is not None and b.requests.max_rate == 20
    assert b.held_for() > 4  # the hold a 429 set outlives the change
    assert ratelimit.limiter_for(ProviderConfig("q", "openai")) is not b


def test_tokens_are_charged_by_estimate_then_settled(short_minute: None) -> None:
    limiter = ratelimit.ProviderLimiter("p", RateLimit(tokens_per_minute=100))  # 200 tokens a second

    async def go() -> float:
        await limiter.acquire(60)
        await limiter.settle(used_tokens=100, estimated_tokens=60)  # 40 more: the bucket is full (100)
        started = time.monotonic()
        await limiter.acquire(50)  # waits until 50 leaked out: 0.25 s
        return time.monotonic() - started

    assert asyncio.run(go()) >= 0.2


def test_the_bucket_is_shared_across_event_loops_in_threads(short_minute: None) -> None:
    provider = ProviderConfig("shared", "openai", rate_limit=RateLimit(requests_per_minute=2))
    stamps: list[float] = []
    lock = threading.Lock()

    def caller() -> None:
        async def go() -> None:
            limiter = ratelimit.limiter_for(provider)
            for _ in range(3):
                await limiter.acquire()
                with lock:
                    stamps.append(time.monotonic())

        asyncio.run(go())

    threads = [threading.Thread(target=caller) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(stamps) == 6
    assert _max_in_window(stamps, PERIOD * 0.9) <= 3  # 2 at once, then 2 a period: 2 + 1.8 (a bucket per thread: 4 at once)


CONFIG = """
apiVersion: reconciler/v1
kind: Provider
metadata: {name: limited}
spec: {type: openai-compatible, base_url: "BASE", rate_limit: LIMIT}
---
apiVersion: reconciler/v1
kind: Agent
metadata: {name: classifier}
spec: {provider: limited, model_name: small, temperature: 0.0}
""" + CLASSIFY_TASK


def _run(name: str, n: int, concurrency: int) -> str:
    inputs = "\n".join(f"    - {{text: 'item {name} {i}'}}" for i in range(n))
    return f"""
apiVersion: reconciler/v1
kind: Run
metadata: {{name: {name}}}
spec:
  assignment: classifier-classify
  prompt_template: "Message: {{text}}"
  concurrency: {concurrency}
  max_retries: 3
  inputs:
{inputs}
"""


@pytest.mark.usefixtures("real_llm_requests")
def test_two_runs_at_once_share_the_providers_limit(short_minute: None, write_manifests, cli_run, sqlite_url: str) -> None:
    """Two runs in two threads (as `watch` starts on_apply runs) together stay within requests_per_minute."""
    from reconciler.runs.service import RunOptions, execute_run
    from reconciler.state.db import open_engine

    arrivals: list[float] = []

    def answer(prompt: str, n: int) -> dict[str, Any]:
        arrivals.append(time.monotonic())
        return keyword_classifier(prompt)

    stub = WireStub("openai", None, ("small",), answer)
    with serve_api(stub):
        config = CONFIG.replace("BASE", stub.base_url).replace("LIMIT", "{requests_per_minute: 3}")
        root = write_manifests({"config.yaml": config, "a.yaml": _run("run-a", 6, 4), "b.yaml": _run("run-b", 6, 4)})
        assert cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve", "--no-validate")[0] == 0
        engine = open_engine(sqlite_url, create=False)
        summaries: dict[str, Any] = {}
        threads = [
            threading.Thread(target=lambda n=name: summaries.__setitem__(n, execute_run(engine, n, RunOptions())))
            for name in ("run-a", "run-b")
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert {n: s.status for n, s in summaries.items()} == {"run-a": "completed", "run-b": "completed"}
    assert len(arrivals) == 12
    # a leaky bucket lets 3 through at once, then 3 a period: at most 3 + 3 * 0.9 sent in 0.9 of a
    # period; they arrive a little later, not all equally (two slack for a loaded machine). A bucket
    # per run would let 6 through at once and 12 within the first period.
    assert _max_in_window(arrivals, PERIOD * 0.9) <= 7
    assert arrivals[-1] - arrivals[0] >= PERIOD * 2.5  # 12 requests: 3 at once, 9 at 3 a period (one bucket per run: 1 period)


@pytest.mark.usefixtures("real_llm_requests")
def test_a_429_with_retry_after_holds_every_request_to_the_provider(write_manifests, cli_run, sqlite_url: str) -> None:
    """The first request gets 429 Retry-After: 1; the other worker, whose answer is slower than that
    429, must not send its next request before the second is over (the provider declared no limit)."""
    arrivals: list[tuple[int, float]] = []

    def answer(prompt: str, n: int) -> dict[str, Any] | Reply:
        arrivals.append((n, time.monotonic()))
        if len(arrivals) == 1:
            return Reply(429, {"Retry-After": "1"}, {"error": {"message": "slow down", "type": "rate_limit"}})
        time.sleep(0.2)
        return keyword_classifier(prompt)

    stub = WireStub("openai", None, ("small",), answer)
    with serve_api(stub):
        config = CONFIG.replace("BASE", stub.base_url).replace(", rate_limit: LIMIT", "")
        root = write_manifests({"config.yaml": config, "run.yaml": _run("held", 4, 2)})
        assert cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve", "--no-validate")[0] == 0
        code, out, err = cli_run("run", "held", "--db", sqlite_url)
    assert code == 0, err
    assert "completed — 4/4 valid" in out
    first = arrivals[0][1]
    later = [t for _, t in arrivals[2:]]  # the first two were sent together, before the 429 came back
    assert later and min(later) - first >= 0.95


@pytest.mark.usefixtures("real_llm_requests")
def test_a_rate_limit_is_planned_and_exported_but_not_part_of_the_runs_configuration(write_manifests, cli_run, sqlite_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    stub = WireStub("openai", None, ("small",), lambda prompt, n: keyword_classifier(prompt))
    with serve_api(stub):
        config = CONFIG.replace("BASE", stub.base_url)
        root = write_manifests({"config.yaml": config.replace("LIMIT", "{requests_per_minute: 600}"), "run.yaml": _run("limited-run", 2, 1)})
        assert cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve")[0] == 0
        assert cli_run("run", "limited-run", "--db", sqlite_url)[0] == 0
        first = json.loads(cli_run("runs", "show", "limited-run", "--db", sqlite_url, "-o", "json")[1])
        assert "rate_limit" not in json.dumps(first["config_snapshot"])

        (root / "config.yaml").write_text(config.replace("LIMIT", "{requests_per_minute: 60, tokens_per_minute: 10000}"))
        code, out, _ = cli_run("plan", str(root), "--db", sqlite_url)
        assert code == 0 and "~ provider limited" in out and "rate_limit" in out
        assert cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve")[0] == 0
        # how fast requests go is not what they say: a run after the change shares the first one's hash
        (root / "second.yaml").write_text(_run("second-run", 2, 1))
        assert cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve", "--no-prune")[0] == 0
        assert cli_run("run", "second-run", "--db", sqlite_url)[0] == 0
        second = json.loads(cli_run("runs", "show", "second-run", "--db", sqlite_url, "-o", "json")[1])
        assert second["config_sha256"] == first["config_sha256"]
        code, out, err = cli_run("export", "--db", sqlite_url, "--out", str(tmp_path / "exported"))
        assert code == 0, err
    exported = (tmp_path / "exported" / "providers.yaml").read_text()
    assert "rate_limit:" in exported and "requests_per_minute: 60" in exported and "tokens_per_minute: 10000" in exported
