"""``reconciler run NAME --distribute``: check the run can start exactly as a local run checks it,
claim it for the task queue with the same configuration snapshot and hash, cut its unfinished items
into chunks and defer one job per chunk, all in one transaction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine

from reconciler.runs import experiment, service, store
from reconciler.runs import experiment_store as xstore
from reconciler.runs.distributed import chunks as cutting
from reconciler.runs.distributed import queue
from reconciler.runs.distributed import store as dstore
from reconciler.runs.distributed.finish import finish_experiment, finish_run
from reconciler.runs.runner import DEFAULT_MAX_CONSECUTIVE_FAILURES
from reconciler.runs.store import DISTRIBUTED_RUNNER
from reconciler.state.tables import utcnow


@dataclass(frozen=True)
class DistributeOptions:
    chunk_size: int | None = None  # items per chunk; default: chunks.default_chunk_size
    queue: str = queue.DEFAULT_QUEUE
    concurrency: int | None = None  # items at once per worker; default: the run's concurrency
    retry_failed: bool = False  # also redo items that finished as failed
    max_consecutive_failures: int | None = None  # transient failures in a row on one worker before its chunk stops
    use_cache: bool = True  # workers reuse answers from the answer cache, as a local run does


@dataclass(frozen=True)
class Distributed:
    name: str
    items_total: int
    items_queued: int  # unfinished items now with the queue
    chunks: int
    queue: str
    config_sha256: str
    already: bool = False  # it was distributed before and is still open: nothing new was queued
    kind: str = "Run"  # or "Experiment" (items are its answers: inputs x repeats x agents)
    arms: int = 0

    def describe(self) -> str:
        what = "answers" if self.kind == "Experiment" else "items"
        if self.already:
            return f"already distributed: {self.chunks} chunks still open on queue {self.queue!r}"
        if not self.chunks:
            return f"nothing to distribute: all {self.items_total} {what} are finished"
        where = f"; config sha256 {self.config_sha256[:12]}" if self.config_sha256 else f" ({self.arms} arms interleaved)"
        return (
            f"distributed {self.items_queued} of {self.items_total} {what} in {self.chunks} chunk{'s' if self.chunks != 1 else ''} "
            f"on queue {self.queue!r}{where}"
        )


def _settings(options: DistributeOptions, spec: dict[str, Any]) -> dstore.ChunkSettings:
    return dstore.ChunkSettings(
        options.queue,
        options.concurrency or int(spec.get("concurrency", 4)),
        options.retry_failed,
        options.max_consecutive_failures or DEFAULT_MAX_CONSECUTIVE_FAILURES,
        options.use_cache,
    )


def _defer(conn: Connection, engine: Engine, queue_name: str, rows: list[dstore.Chunk]) -> None:
    """One job per chunk, in the order of ``rows`` (the order workers take them), in ``conn``'s transaction."""
    job_ids = queue.defer_chunks(conn, engine.url, queue_name, [r.id for r in rows])
    dstore.set_job_ids(conn, {r.id: j for r, j in zip(rows, job_ids, strict=True)})


def distribute_run(engine: Engine, name: str, options: DistributeOptions = DistributeOptions()) -> Distributed:
    dstore.require_postgres(engine.url, "run --distribute")
    record = store.find_run(engine, name)
    total = len(record.spec.get("inputs") or [])
    if record.runner == DISTRIBUTED_RUNNER and record.status == "running":
        finish_run(engine, record.id)  # chunks all closed, but the worker that closed the last died
        record = store.find_run(engine, name)
        if record.runner == DISTRIBUTED_RUNNER and record.status == "running":
            shown = dstore.distribution(engine, record.id)
            return Distributed(name, total, 0, shown.open if shown else 0, options.queue, record.config_sha256 or "", already=True)
    service.refuse_to_start(record, "run", name, f"reconciler runs show {name}")
    prepared = service.prepare_run(engine, record, options.retry_failed)
    todo = [item.index for item in prepared.items]
    settings = _settings(options, record.spec)
    pieces = cutting.cut(todo, options.chunk_size or cutting.default_chunk_size(len(todo), settings.concurrency))
    with dstore.run_lock(engine, record.id), engine.begin() as conn:
        _defer(conn, engine, options.queue, dstore.claim_and_chunk(conn, record, prepared.snapshot, prepared.sha, pieces, settings))
    if not pieces:
        finish_run(engine, record.id)  # nothing left to do: finished as a local run with no items is
    return Distributed(name, total, len(todo), len(pieces), options.queue, prepared.sha)


def distribute_experiment(engine: Engine, name: str, options: DistributeOptions = DistributeOptions()) -> Distributed:
    """``run experiment/NAME --distribute``: checked and claimed as a local experiment is, each arm's
    unfinished items cut into chunks, the chunks queued with the arms interleaved as a local
    experiment interleaves its items (by first item, then arm): a stopped experiment leaves every
    arm with about the same items done."""
    dstore.require_postgres(engine.url, "run --distribute")
    record = xstore.get_experiment(engine, name)
    total = len(record.spec.get("inputs") or []) * int(record.spec.get("repeats", 1)) * len(record.spec.get("agents") or [])
    if record.runner == DISTRIBUTED_RUNNER and record.status == "running":
        finish_experiment(engine, record.id)  # chunks all closed, but the worker that closed the last died
        record = xstore.get_experiment(engine, name)
        if record.runner == DISTRIBUTED_RUNNER and record.status == "running":
            shown = dstore.distribution(engine, [arm.run_id for arm in xstore.arms_of(engine, record.id)])
            return Distributed(name, total, 0, shown.open if shown else 0, options.queue, "", already=True, kind="Experiment")
    service.refuse_to_start(record, "experiment", name, f"reconciler experiments show {name}")
    prepared = experiment.prepare_experiment(engine, record, options.retry_failed)
    settings = _settings(options, record.spec)
    todo = sum(len(items) for items in prepared.todo)
    size = options.chunk_size or cutting.default_chunk_size(todo, settings.concurrency)
    pieces = sorted(
        ((piece, arm) for arm, items in enumerate(prepared.todo) for piece in cutting.cut([i.index for i in items], size)),
        key=lambda p: (p[0][0], p[1]),
    )
    numbered: dict[int, list[tuple[int, list[int]]]] = {arm: [] for arm in range(len(prepared.agents))}
    for number, (piece, arm) in enumerate(pieces):
        numbered[arm].append((number, piece))
    with dstore.run_lock(engine, record.id), engine.begin() as conn:
        run_ids = xstore.claim_experiment_on(conn, record, prepared.starts(), distributed=True)
        now = utcnow()
        rows = [row for arm, chunks in numbered.items() for row in dstore.replace_chunks(conn, run_ids[arm], chunks, settings, now)]
        _defer(conn, engine, options.queue, sorted(rows, key=lambda r: r.chunk))
    if not pieces:
        finish_experiment(engine, record.id)  # nothing left to do
    return Distributed(name, total, todo, len(pieces), options.queue, "", kind="Experiment", arms=len(prepared.agents))
