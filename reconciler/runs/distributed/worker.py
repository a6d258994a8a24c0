"""``reconciler worker``: take chunks of any distributed run from the task queue and process their
items as a local run would (same runner, retries, agents, result rows), writing each result once.

Per worker, ``concurrency`` caps the items in flight over all the chunks it holds, and a run's own
concurrency caps that run's share. It holds up to ``CHUNKS_AT_ONCE`` chunks, so a chunk's last slow
items do not leave the other slots idle. On SIGTERM (or SIGINT) it takes no new item: those in flight
finish and are stored, the rest of its chunks go back to the queue for another worker. A worker that
dies instead is found by its heartbeat: after ``stalled_after`` seconds without one, any other worker
retries its chunks, and the items it had stored are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from procrastinate import exceptions as queue_errors
from procrastinate.app import WorkerOptions as WorkerOptions_
from procrastinate.jobs import Job
from sqlalchemy import Engine

from reconciler.errors import ReconcilerError, first_line
from reconciler.llm.ports import AgentResult, ExecutionSettings, LLMAgent, LLMError, ProviderConfig
from reconciler.runs import answer_cache, metrics, service, store
from reconciler.runs import experiment_store as xstore
from reconciler.runs.distributed import queue
from reconciler.runs.distributed import store as dstore
from reconciler.runs.distributed.finish import finish_run
from reconciler.runs.evaluate import Arm, EvaluationOptions, evaluate_with
from reconciler.runs.runner import HALTED, ResultSink

CHUNKS_AT_ONCE = 2
KEPT_RUNS = 8  # runs whose configuration and agent a worker keeps between chunks


@dataclass(frozen=True)
class WorkerOptions:
    concurrency: int = 4  # items in flight at once on this worker
    queues: tuple[str, ...] | None = None  # None: every queue
    stalled_after: float = 30.0  # seconds without a heartbeat before a worker's chunks go to others
    poll_seconds: float = 1.0  # the queue also notifies new jobs; this is the fallback


Event = dict[str, Any]
OnEvent = Callable[[Event], None]


class _Capped:
    """An agent whose calls wait for a slot of the worker and one of the run (on this worker)."""

    def __init__(self, agent: LLMAgent, worker_slots: asyncio.Semaphore, run_slots: asyncio.Semaphore) -> None:
        self._agent, self._worker_slots, self._run_slots = agent, worker_slots, run_slots
        self.config_sha256 = agent.config_sha256

    async def run(self, prompt: str) -> AgentResult:
        async with self._run_slots, self._worker_slots:
            return await self._agent.run(prompt)

    def __getattr__(self, name: str) -> Any:  # recover() of the embedded server, and the like
        return getattr(self._agent, name)


class _ClosedOffLoop(ResultSink):
    """A sink whose last write is waited for on a thread (``really_close``), not on the event loop
    when ``execute`` returns: the worker's other chunk and its heartbeat go on meanwhile."""

    def close(self) -> None:
        pass

    def really_close(self) -> None:
        super().close()


@dataclass
class _RunContext:
    """One run (or experiment arm) as this worker executes it: where its inputs are, its checked
    configuration and agent."""

    unit: _Unit
    agent: Any  # _Capped
    raw_agent: LLMAgent
    arm: Arm  # the configuration, its key decrypted (in memory only)
    settings: ExecutionSettings
    provider: ProviderConfig  # without its key


@dataclass(frozen=True)
class _Unit:
    """Where a chunk's items come from: its run's spec, or its experiment's (an arm)."""

    name: str  # the run's, or the experiment's
    label: str  # for messages: run 'x', or experiment 'x' (agent 'y')
    spec: dict[str, Any]  # inputs, prompt template, retries
    repeats: int

    @property
    def items_total(self) -> int:
        return len(self.spec.get("inputs") or []) * self.repeats


def _unit_of(engine: Engine, record: store.RunRecord) -> _Unit:
    """Where a chunk's run takes its inputs from: its own spec, or its experiment's (an arm)."""
    with engine.connect() as conn:
        link = dstore.arm_of(conn, record.id)
    if link is None:
        return _Unit(record.name, f"run {record.name!r}", record.spec, 1)
    x = xstore.experiment_by_id(engine, link.experiment_id)
    return _Unit(x.name, f"experiment {x.name!r} (agent {link.agent!r})", x.spec, int(x.spec.get("repeats", 1)))


@dataclass
class WorkerStats:
    chunks: int = 0
    items: int = 0  # results this worker stored
    requeued: int = 0
    runs_finished: list[str] = field(default_factory=list)


class ChunkExecutor:
    """Executes the chunks the queue hands this worker (one event loop: the queue's)."""

    def __init__(self, engine: Engine, options: WorkerOptions, on_event: OnEvent, registry: Any = None) -> None:
        self.engine, self.options, self.on_event = engine, options, on_event
        self.identity = store.runner_identity()
        self.halt = threading.Event()
        self.stats = WorkerStats()
        self._registry = registry
        self._slots: asyncio.Semaphore | None = None
        self._runs: OrderedDict[tuple[uuid.UUID, datetime], _RunContext] = OrderedDict()
        self._run_locks: dict[tuple[uuid.UUID, datetime], asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.queue_worker_id: int | None = None  # this worker's id in the queue (from its first job)
        self.taken_for_dead = False  # the other workers found no heartbeat and handed its chunks on

    def emit(self, event: str, **fields: Any) -> None:
        self.on_event({"event": event, "worker": self.identity, **fields})

    async def handle(self, chunk_id: uuid.UUID, job: Job) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handle(chunk_id, job)
        finally:
            self._tasks.discard(task)

    async def _handle(self, chunk_id: uuid.UUID, job: Job) -> None:
        self.queue_worker_id = job.worker_id
        taken = await asyncio.to_thread(dstore.take_chunk, self.engine, chunk_id, self.identity, job.attempts, queue.MAX_ATTEMPTS)
        if taken.chunk is None:
            self.emit("chunk_skipped", chunk_id=str(chunk_id), reason=taken.skipped)
            if taken.closed_last:
                await self._finish_runs()
            return
        chunk = taken.chunk
        self.stats.chunks += 1
        try:
            context = await self._context(chunk)
        except (ReconcilerError, LLMError) as exc:
            reason = exc.problems[0].message if isinstance(exc, ReconcilerError) else first_line(exc)
            await self._close(chunk, "stopped", reason)
            return
        skip = await asyncio.to_thread(
            dstore.stored_items,
            self.engine,
            chunk.run_id,
            chunk.items,
            retry_failed=chunk.retry_failed,
            before=chunk.enqueued_at,
        )
        unit, wanted = context.unit, set(chunk.items) - skip
        try:  # the chunk's items only: every other index is skipped
            items = service.work_items(unit.label, unit.spec, set(range(unit.items_total)) - wanted, unit.repeats)
        except ReconcilerError as exc:
            await self._close(chunk, "stopped", exc.problems[0].message)
            return
        self.emit("chunk_started", run=unit.name, chunk=chunk.chunk, items=len(items), attempt=chunk.attempts)
        replace_before = chunk.enqueued_at if chunk.retry_failed else None
        stored = 0

        def save(batch: list[Any], answers: list[Any]) -> None:
            nonlocal stored
            rows = [o.row() for o in batch]
            stored += dstore.save_results(self.engine, chunk.run_id, rows, self.identity, replace_failed_before=replace_before, answers=answers)

        sinks: list[_ClosedOffLoop] = []

        def make_sink(flush: Callable[[list[Any]], None]) -> _ClosedOffLoop:
            sinks.append(_ClosedOffLoop(flush))
            return sinks[-1]

        options = EvaluationOptions(chunk.concurrency, context.settings, chunk.use_cache, chunk.max_consecutive_failures)
        # the answers its run could have reused when it was distributed, as a local run looks them up at its start
        lookup = partial(answer_cache.lookup, self.engine, before=chunk.enqueued_at)
        try:
            try:
                outcome = await evaluate_with(
                    [context.agent], [context.arm], [items], options, save=save, lookup=lookup, halt=self.halt, make_sink=make_sink
                )
            finally:  # whatever happened, what finished is stored
                for sink in sinks:
                    await asyncio.shield(asyncio.to_thread(sink.really_close))
        except asyncio.CancelledError:  # a second signal: the chunk goes back to the queue
            await asyncio.shield(asyncio.to_thread(dstore.requeue_chunk, self.engine, chunk.id))
            self.stats.items += stored
            raise
        self.stats.items += stored
        if outcome.stopped_reason == HALTED and outcome.processed + outcome.reused + outcome.unanswered < len(items):
            if self.taken_for_dead:  # the chunk is another worker's now: leave its row alone
                raise queue.ChunkRequeued(f"worker {self.identity} was taken for dead")
            await asyncio.to_thread(dstore.requeue_chunk, self.engine, chunk.id)
            self.stats.requeued += 1
            left = len(items) - outcome.processed - outcome.reused
            self.emit("chunk_requeued", run=unit.name, chunk=chunk.chunk, stored=stored, left=left)
            raise queue.ChunkRequeued(f"worker {self.identity} stopped")
        if outcome.stopped_reason is not None and outcome.stopped_reason != HALTED:  # the breaker: the provider looks down
            provider = context.provider
            reason = f"provider {provider.name!r} ({provider.type}) looks down: {outcome.stopped_reason}"
            await self._close(chunk, "stopped", reason, stored=stored, run=unit.name)
        elif outcome.unanswered:  # done, with items that got only transient errors left unfinished (as a local run leaves them)
            await self._close(chunk, "done", outcome.last_transient_error or "transient errors", stored=stored, run=unit.name)
        else:
            await self._close(chunk, "done", None, stored=stored, run=unit.name)

    async def _close(self, chunk: dstore.Chunk, state: dstore.ChunkState, error: str | None, *, stored: int = 0, run: str = "") -> None:
        last = await asyncio.to_thread(dstore.finish_chunk, self.engine, chunk, state, error)
        self.emit("chunk_" + state, run=run, chunk=chunk.chunk, stored=stored, **({"error": error} if error else {}))
        if last:
            await self._finish_run(chunk.run_id)

    async def _finish_run(self, run_id: uuid.UUID) -> None:
        summary = await asyncio.to_thread(finish_run, self.engine, run_id)
        if summary is not None:
            self.stats.runs_finished.append(summary.name)
            self.emit("run_finished", run=summary.name, status=summary.status, summary=summary.describe())

    async def _finish_runs(self) -> None:
        for run_id in await asyncio.to_thread(dstore.runs_to_finish, self.engine):
            await self._finish_run(run_id)

    async def _context(self, chunk: dstore.Chunk) -> _RunContext:
        """The run's configuration, resolved from the database and checked against the snapshot the
        run was distributed with; its agent is made once per run and distribution."""
        key = (chunk.run_id, chunk.enqueued_at)
        if key in self._runs:
            self._runs.move_to_end(key)
            return self._runs[key]
        async with self._run_locks.setdefault(key, asyncio.Lock()):
            if key in self._runs:
                return self._runs[key]
            context = await self._new_context(chunk)
            self._runs[key] = context
            self._run_locks.pop(key, None)  # later chunks find the context; waiters hold the lock object
            while len(self._runs) > KEPT_RUNS:
                _, old = self._runs.popitem(last=False)
                # runs of one configuration share one agent (the registry's): close it with the last of them
                if not any(kept.raw_agent is old.raw_agent for kept in self._runs.values()):
                    await _close_agent(old.raw_agent)
            return context

    async def _new_context(self, chunk: dstore.Chunk) -> _RunContext:
        record = await asyncio.to_thread(dstore.find_run_by_id, self.engine, chunk.run_id)
        unit = await asyncio.to_thread(_unit_of, self.engine, record)
        config = await asyncio.to_thread(store.resolve_assignment, self.engine, record.assignment_id, unit.name)
        service.check_runnable(unit.name, config)
        model_file = service.model_file_of(config.provider)
        sha = metrics.snapshot_sha256(metrics.config_snapshot(config.provider, config.agent, config.task, model_file))
        if sha != record.config_sha256:
            raise ReconcilerError(
                f"this worker's configuration of {unit.label} differs from the one it was distributed with "
                f"(sha256 {sha[:12]} here, {str(record.config_sha256)[:12]} in the run): the agent, task or provider "
                "changed since, or this host lacks the model file"
            )
        provider = service.with_secret(config.provider, config.api_key_encrypted, self.engine.url)
        settings = service.execution_settings(unit.spec)
        if self._registry is None:
            from reconciler.llm.registry import default_registry

            self._registry = default_registry()
        agent = await self._registry.get_or_create(config.agent, config.task, provider, settings)
        assert self._slots is not None
        capped = _Capped(agent, self._slots, asyncio.Semaphore(max(1, chunk.concurrency)))
        arm = Arm(config.agent.name, config.agent, config.task, provider, model_file)
        return _RunContext(unit, capped, agent, arm, settings, config.provider)

    async def repair(self, app: Any) -> None:
        """What every worker does now and then: retry the jobs of stalled workers, close chunks whose
        job ended without them, and finish runs whose last worker died before finishing them."""
        retried = await queue.retry_stalled(app, self.options.stalled_after)
        if retried:
            self.emit("stalled_retried", jobs=retried)
        for chunk, job_status in await asyncio.to_thread(dstore.orphaned_chunks, self.engine):
            await self._close(chunk, "stopped", f"its job ended as {job_status} without finishing it")
        await self._finish_runs()

    def pruned(self) -> bool:
        """Did other workers take this one for dead (its row in the queue's worker table is gone)?"""
        return self.queue_worker_id is not None and not dstore.queue_worker_exists(self.engine, self.queue_worker_id)

    def stop(self) -> None:
        """First SIGTERM/SIGINT: take no new item, let those in flight finish."""
        if self.halt.is_set():
            self.emit("stopping_now", chunks=len(self._tasks))
            for task in list(self._tasks):
                task.cancel()
            return
        self.halt.set()
        self.emit("stopping", chunks=len(self._tasks))

    async def aclose(self) -> None:
        for agent in {id(c.raw_agent): c.raw_agent for c in self._runs.values()}.values():
            await _close_agent(agent)
        self._runs.clear()


async def _close_agent(agent: Any) -> None:
    close = getattr(agent, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()


def run_worker(engine: Engine, options: WorkerOptions, on_event: OnEvent, registry: Any = None) -> WorkerStats:
    """Work until SIGTERM/SIGINT; the counts of what this worker did."""
    dstore.require_postgres(engine.url, "reconciler worker")
    if registry is None:
        # before the event loop: importing the LLM framework takes seconds, and a loop blocked that
        # long misses heartbeats (the queue would take this worker for dead and hand its chunks on)
        from reconciler.llm.registry import default_registry

        registry = default_registry()
    executor = ChunkExecutor(engine, options, on_event, registry)
    try:
        asyncio.run(_serve(executor))
    except queue_errors.ConnectorException:
        if not executor.pruned():
            raise
        executor.taken_for_dead = True
    if executor.taken_for_dead:
        raise ReconcilerError(
            f"worker {executor.identity} was taken for dead: no heartbeat for {options.stalled_after:g} s (its host or "
            "event loop stalled, or the database was out of reach); its chunks went to other workers, and what it "
            "stored is kept",
            hint="start it again; raise --stalled-after if its host is often that busy",
        )
    return executor.stats


class _QueueLog(logging.Handler):
    """The engine's warnings and errors as worker events: one line each, no traceback."""

    def __init__(self, executor: ChunkExecutor) -> None:
        super().__init__(logging.WARNING)
        self.executor = executor

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().strip().splitlines()
        reason = first_line(record.exc_info[1]) if record.exc_info and record.exc_info[1] else None
        self.executor.emit("queue_" + record.levelname.lower(), message=message[0] if message else "", **({"error": reason} if reason else {}))


def _on_loop_error(executor: ChunkExecutor, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A job the queue could not record as finished (another worker took it over while this one
    was taken for dead) is reported as an event; anything else as asyncio would."""
    exc = context.get("exception")
    if isinstance(exc, queue_errors.ConnectorException):
        executor.emit("job_lost", error=first_line(exc.__cause__ or exc))
        return
    loop.default_exception_handler(context)


async def _serve(executor: ChunkExecutor) -> None:
    options = executor.options
    executor._slots = asyncio.Semaphore(max(1, options.concurrency))
    app = queue.make_app(executor.engine.url, executor.handle)
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda loop, context: _on_loop_error(executor, loop, context))
    engine_log = logging.getLogger("procrastinate")
    engine_log.addHandler(_QueueLog(executor))
    engine_log.propagate = False
    worker_options: WorkerOptions_ = {
        "name": executor.identity,
        "concurrency": CHUNKS_AT_ONCE,
        "install_signal_handlers": False,
        "fetch_job_polling_interval": options.poll_seconds,
        "delete_jobs": "successful",
        **queue.stall_timings(options.stalled_after),
    }
    if options.queues:
        worker_options["queues"] = list(options.queues)  # absent: every queue
    async with app.open_async():
        worker = asyncio.create_task(app.run_worker_async(**worker_options))

        def on_signal() -> None:
            if not executor.halt.is_set():
                worker.cancel()  # the queue's worker stops fetching and waits for the chunks it holds
            executor.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        executor.emit(
            "started",
            queues=list(options.queues) if options.queues else "all",
            concurrency=options.concurrency,
            stalled_after=options.stalled_after,
        )
        repairing = asyncio.create_task(_repair_loop(executor, app, on_signal))
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        finally:
            repairing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await repairing
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await executor.aclose()
    executor.emit("stopped", chunks=executor.stats.chunks, items=executor.stats.items, requeued=executor.stats.requeued)


async def _repair_loop(executor: ChunkExecutor, app: Any, stop: Callable[[], None]) -> None:
    """Every half of --stalled-after: the repair pass, and whether the other workers took this one
    for dead (then it stops as on SIGTERM: its chunks are another worker's now)."""
    every = max(0.5, executor.options.stalled_after / 2)
    while True:
        started = time.monotonic()
        try:
            if await asyncio.to_thread(executor.pruned):
                executor.taken_for_dead = True
                stop()
                return
            await executor.repair(app)
        except Exception as exc:  # noqa: BLE001 - the database may be down for a moment: try again next time
            executor.emit("repair_failed", error=first_line(exc))
        await asyncio.sleep(max(0.0, every - (time.monotonic() - started)))
