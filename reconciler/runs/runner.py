"""Execute a run's items through an ``LLMAgent``: bounded concurrency, retries with jittered backoff,
results handed to a sink in batches. No database here: the service wires the sink to storage.

Failure policy, per item:
- invalid output after the agent's retries with feedback, or a request the provider rejects: the item
  is finished as failed, with the reason (the model's failure);
- transient failures (connection refused or reset, 5xx, 429, timeouts): retried up to ``max_retries``
  times after a backoff (the provider's Retry-After when it sends one; the embedded server is
  restarted), then left unfinished: never counted as the model's failure, a resume retries it.

Across items, an ``OutageBreaker`` counts transient failures in a row; at its limit the provider is
taken to be down and the run stops taking items (those in flight give up at their next retry),
leaving the rest unfinished for a resume instead of spending every retry on them.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from reconciler.llm.ports import (
    LLMAgent,
    LLMError,
    ProviderUnreachable,
    RateLimited,
    RetryableError,
)

BACKOFF_BASE_ENV = "RECONCILER_RETRY_BASE_SECONDS"
DEFAULT_MAX_CONSECUTIVE_FAILURES = 5
BACKOFF_CAP_SECONDS = 30.0
RETRY_AFTER_CAP_SECONDS = 120.0
HALTED = "the process running it was asked to stop"


@dataclass(frozen=True)
class WorkItem:
    index: int
    input: dict[str, Any]
    prompt: str
    arm: int = 0  # which of the agents answers it (an experiment interleaves its arms in one pool)


@dataclass(frozen=True)
class ItemOutcome:
    index: int
    input: dict[str, Any]
    output: Any
    valid: bool
    error: str | None
    attempts: int
    input_tokens: int
    output_tokens: int
    latency_ms: float
    transient: bool = False  # every attempt failed for a transient reason: left unfinished, not stored
    arm: int = 0
    reused: bool = False  # taken from the answer cache: no model call

    def row(self) -> dict[str, Any]:
        return {
            "item_index": self.index,
            "input": self.input,
            "output": self.output,
            "valid": self.valid,
            "error": self.error,
            "attempts": self.attempts,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "latency_ms": self.latency_ms,
            "reused": self.reused,
        }


@dataclass
class RunOutcome:
    processed: int = 0  # items finished (stored) now
    unanswered: int = 0  # items given up on after transient failures (left unfinished)
    stopped_reason: str | None = None  # set when the run stopped before every item was processed
    last_transient_error: str | None = None


class OutageBreaker:
    """Transient failures in a row across items; at ``limit`` the provider is taken to be down.

    Every transient attempt counts, except a 429 the item will still retry (throttling that a backoff
    resolves is not an outage; one that outlasts the retries is). Any answer from the provider, even
    an invalid one, resets the count. Shareable by several ``execute`` calls on one provider (the arms
    of an experiment) within one event loop."""

    def __init__(self, limit: int = DEFAULT_MAX_CONSECUTIVE_FAILURES) -> None:
        self.limit = max(1, limit)
        self.count = 0
        self.last_error: str | None = None
        self.tripped = asyncio.Event()

    def failure(self, error: str) -> None:
        if self.tripped.is_set():
            return  # requests in flight when it tripped: the count says what tripped it
        self.count += 1
        self.last_error = error
        if self.count >= self.limit:
            self.tripped.set()

    def answered(self) -> None:
        if not self.tripped.is_set():
            self.count = 0

    def reason(self) -> str:
        return f"{self.count} transient failures in a row (last: {self.last_error})"

    async def sleep(self, seconds: float) -> None:
        """Sleep, but wake as soon as the breaker trips (the item then gives up at once)."""
        try:
            await asyncio.wait_for(self.tripped.wait(), seconds)
        except TimeoutError:
            pass


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 2
    base_seconds: float = field(default_factory=lambda: float(os.environ.get(BACKOFF_BASE_ENV, "0.5")))
    cap_seconds: float = BACKOFF_CAP_SECONDS
    max_consecutive_failures: int = DEFAULT_MAX_CONSECUTIVE_FAILURES  # across items: then the run pauses

    def delay(self, retry: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter (so many workers do not retry in lockstep), at least Retry-After."""
        ceiling = min(self.cap_seconds, self.base_seconds * (2**retry))
        wait = random.uniform(ceiling / 2, ceiling)
        if retry_after is not None and retry_after > 0:
            wait = max(wait, min(retry_after, RETRY_AFTER_CAP_SECONDS))
        return wait


class ResultSink:
    """Collects outcomes and hands them to ``flush`` in batches (by count or age) on one writer thread.

    A commit can take tens of milliseconds (SQLite waits for the disk); on the event loop that would
    stall every worker, so writes run on a thread while the workers go on. One write at a time:
    outcomes finished meanwhile go in the next batch, so a slow database gets fewer, larger writes.
    A write that failed raises at the next ``add`` or at ``close``.
    """

    def __init__(self, flush: Callable[[list[ItemOutcome]], None], batch: int = 256, max_age: float = 1.0, beat_every: float = 30.0) -> None:
        self._flush, self._batch, self._max_age, self._beat_every = flush, batch, max_age, beat_every
        self._pending: list[ItemOutcome] = []
        self._oldest = 0.0
        self._last_write = time.monotonic()
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="run-results")
        self._writing: Future[None] | None = None

    def add(self, outcome: ItemOutcome) -> None:
        if not self._pending:
            self._oldest = time.monotonic()
        self._pending.append(outcome)
        if len(self._pending) >= self._batch or time.monotonic() - self._oldest >= self._max_age:
            self._write()

    def _write(self, beat: bool = False) -> None:
        """Start writing what is pending unless a write is still running (the next one takes it too)."""
        if self._writing is not None:
            if not self._writing.done():
                return
            self._writing.result()  # raises what the last write raised
        if self._pending or beat:
            pending, self._pending = self._pending, []
            self._last_write = time.monotonic()
            self._writing = self._writer.submit(self._flush, pending)

    def tick(self) -> None:
        """Called every fraction of a second: write outcomes older than ``max_age`` (slow runs store every
        item within a second); with nothing written for ``beat_every`` seconds, write an empty batch, which
        only renews the run's heartbeat (another host then knows its runner is alive)."""
        now = time.monotonic()
        if self._writing is not None and self._writing.done() and self._writing.exception() is not None:
            return  # the failure is raised by the next add or by close, not in the ticker's task
        if self._pending and now - self._oldest >= self._max_age:
            self._write()
        elif not self._pending and now - self._last_write >= self._beat_every:
            self._write(beat=True)

    def close(self) -> None:
        """Write everything still pending and wait for it (then the writer thread ends)."""
        try:
            if self._writing is not None:
                self._writing.result()
                self._writing = None
            if self._pending:
                pending, self._pending = self._pending, []
                self._writer.submit(self._flush, pending).result()
        finally:
            self._writer.shutdown(wait=True)


async def process_item(agent: LLMAgent, item: WorkItem, policy: RetryPolicy, breaker: OutageBreaker | None = None) -> ItemOutcome:
    """One item to its outcome: valid, failed (the model's answer or a rejected request) or transient
    (``transient=True``: every attempt failed for a transient reason, or the breaker tripped)."""
    breaker = breaker or OutageBreaker(policy.max_consecutive_failures)
    started = time.perf_counter()
    attempts = inp = out = 0
    last_error = ""
    transient = False
    for retry in range(policy.max_retries + 1):
        if breaker.tripped.is_set():
            transient = True
            last_error = last_error or f"not sent: the provider looks down ({breaker.reason()})"
            break
        try:
            result = await agent.run(item.prompt)
        except LLMError as exc:
            attempts += exc.attempts
            inp += exc.input_tokens
            out += exc.output_tokens
            last_error = str(exc)
            if not isinstance(exc, RetryableError):
                breaker.answered()
                break
            last = retry == policy.max_retries
            if last or not isinstance(exc, RateLimited):
                breaker.failure(last_error)
            if last:
                transient = True
                last_error = f"gave up after {retry + 1} tries: {last_error}"
                break
            if isinstance(exc, ProviderUnreachable):
                recover = getattr(agent, "recover", None)
                if recover is not None:
                    await asyncio.to_thread(recover)
            await breaker.sleep(policy.delay(retry, exc.retry_after))
            continue
        except Exception as exc:  # noqa: BLE001 - a surprise from a backend fails this item, not the run
            attempts += 1
            last_error = f"unexpected error: {type(exc).__name__}: {exc}"
            break
        breaker.answered()
        return ItemOutcome(
            item.index,
            item.input,
            result.output,
            True,
            None,
            attempts + result.attempts,
            inp + result.input_tokens,
            out + result.output_tokens,
            (time.perf_counter() - started) * 1000,
            arm=item.arm,
        )
    latency = (time.perf_counter() - started) * 1000
    return ItemOutcome(item.index, item.input, None, False, last_error, attempts, inp, out, latency, transient=transient, arm=item.arm)


async def execute(
    agent: LLMAgent | Sequence[LLMAgent],
    items: Iterable[WorkItem],
    *,
    concurrency: int,
    policy: RetryPolicy,
    sink: ResultSink,
    on_item: Callable[[ItemOutcome], None] | None = None,
    halt: threading.Event | None = None,
    breaker: OutageBreaker | None = None,
) -> RunOutcome:
    """Process ``items`` with ``concurrency`` workers; outcomes go to ``sink`` (closed, so everything is
    written, before returning, also when cancelled: a Ctrl-C loses nothing that finished). Transient
    outcomes are not written (the items stay unfinished) but reach ``on_item``. Setting ``halt`` (from
    any thread) stops taking items: those in flight finish, the rest stay unfinished for a resume; so
    does the ``breaker`` tripping (default: one for this call, ``policy.max_consecutive_failures``).
    With several agents, ``item.arm`` chooses the one that answers each item."""
    agents: list[LLMAgent] = list(agent) if isinstance(agent, (list, tuple)) else [agent]  # type: ignore[list-item]
    outcome = RunOutcome()
    pending = iter(items)
    breaker = breaker or OutageBreaker(policy.max_consecutive_failures)

    async def worker() -> None:
        for item in pending:
            if halt is not None and halt.is_set():
                outcome.stopped_reason = outcome.stopped_reason or HALTED
                return
            if breaker.tripped.is_set():
                return
            result = await process_item(agents[item.arm], item, policy, breaker)
            if result.transient:
                outcome.unanswered += 1
                outcome.last_transient_error = result.error
            else:
                sink.add(result)
                outcome.processed += 1
            if on_item is not None:
                on_item(result)

    async def ticker() -> None:
        while True:
            await asyncio.sleep(0.25)
            sink.tick()

    tick = asyncio.create_task(ticker())
    try:
        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    finally:
        tick.cancel()
        sink.close()
    if breaker.tripped.is_set():
        outcome.stopped_reason = outcome.stopped_reason or breaker.reason()
    return outcome
