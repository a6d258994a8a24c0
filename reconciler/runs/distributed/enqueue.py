"""``reconciler run NAME --distribute``: check the run can start exactly as a local run checks it,
claim it for the task queue with the same configuration snapshot and hash, cut its unfinished items
into chunks and defer one job per chunk, all in one transaction."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine

from reconciler.errors import ReconcilerError
from reconciler.runs import service, store
from reconciler.runs.distributed import chunks as cutting
from reconciler.runs.distributed import queue
from reconciler.runs.distributed import store as dstore
from reconciler.runs.distributed.finish import finish_run
from reconciler.runs.runner import DEFAULT_MAX_CONSECUTIVE_FAILURES
from reconciler.runs.store import DISTRIBUTED_RUNNER


@dataclass(frozen=True)
class DistributeOptions:
    chunk_size: int | None = None  # items per chunk; default: chunks.default_chunk_size
    queue: str = queue.DEFAULT_QUEUE
    concurrency: int | None = None  # items at once per worker; default: the run's concurrency
    retry_failed: bool = False  # also redo items that finished as failed
    max_consecutive_failures: int | None = None  # transient failures in a row on one worker before its chunk stops


@dataclass(frozen=True)
class Distributed:
    name: str
    items_total: int
    items_queued: int  # unfinished items now with the queue
    chunks: int
    queue: str
    config_sha256: str
    already: bool = False  # it was distributed before and is still open: nothing new was queued

    def describe(self) -> str:
        if self.already:
            return f"already distributed: {self.chunks} chunks still open on queue {self.queue!r}"
        if not self.chunks:
            return f"nothing to distribute: all {self.items_total} items are finished"
        return (
            f"distributed {self.items_queued} of {self.items_total} items in {self.chunks} chunk{'s' if self.chunks != 1 else ''} "
            f"on queue {self.queue!r}; config sha256 {self.config_sha256[:12]}"
        )


def distribute_run(engine: Engine, name: str, options: DistributeOptions = DistributeOptions()) -> Distributed:
    dstore.require_postgres(engine.url, "run --distribute")
    record = store.find_run(engine, name)
    total = len(record.spec.get("inputs") or [])
    if record.runner == DISTRIBUTED_RUNNER and record.status == "running":
        finish_run(engine, record.id)  # chunks all closed, but the worker that closed the last died
        record = store.find_run(engine, name)
        if record.runner == DISTRIBUTED_RUNNER and record.status == "running":
            shown = dstore.distribution(engine, record.id)
            open_chunks = shown.open if shown else 0
            return Distributed(name, total, 0, open_chunks, options.queue, record.config_sha256 or "", already=True)
    if store.holder_is_alive(record):
        raise ReconcilerError(
            f"run {name!r} is being executed by another process ({record.runner})",
            hint=f"wait for it, or watch it with `reconciler runs show {name}`",
        )
    prepared = service.prepare_run(engine, record, options.retry_failed)
    snapshot, sha = prepared.snapshot, prepared.sha
    todo = [item.index for item in prepared.items]
    concurrency = options.concurrency or int(record.spec.get("concurrency", 4))
    size = options.chunk_size or cutting.default_chunk_size(len(todo), concurrency)
    pieces = cutting.cut(todo, size)
    with dstore.run_lock(engine, record.id), engine.begin() as conn:
        rows = dstore.claim_and_chunk(
            conn,
            record,
            snapshot,
            sha,
            pieces,
            queue=options.queue,
            concurrency=concurrency,
            retry_failed=options.retry_failed,
            max_consecutive_failures=options.max_consecutive_failures or DEFAULT_MAX_CONSECUTIVE_FAILURES,
        )
        job_ids = queue.defer_chunks(conn, engine.url, options.queue, [r.id for r in rows])
        dstore.set_job_ids(conn, {r.id: j for r, j in zip(rows, job_ids, strict=True)})
    if not pieces:
        finish_run(engine, record.id)  # nothing left to do: finished as a local run with no items is
    return Distributed(name, total, len(todo), len(pieces), options.queue, sha)
