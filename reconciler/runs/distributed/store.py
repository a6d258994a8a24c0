"""The database side of distributed runs: chunk rows, results stored exactly once, the run's lock,
progress. No task engine here (``queue`` has it): everything is plain SQL on PostgreSQL.

Lock order, everywhere: the run's row (``FOR UPDATE``), then a chunk's row. Writes of results, the
taking and finishing of chunks of one run are so serialised, and the chunk that finishes last sees
that no other is open.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Connection, Engine, delete, func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import URL

from reconciler.errors import ReconcilerError
from reconciler.hashing import sha256_hex
from reconciler.runs import answer_cache, store
from reconciler.runs.answer_cache import CachedAnswer, CacheKey
from reconciler.runs.runner import DEFAULT_MAX_CONSECUTIVE_FAILURES
from reconciler.runs.store import DISTRIBUTED_RUNNER, RunRecord
from reconciler.state.tables import analysis_runs, experiment_arms, experiments, run_chunks, run_results, utcnow

ChunkState = Literal["queued", "running", "done", "stopped"]
OPEN_STATES: tuple[ChunkState, ...] = ("queued", "running")
QUEUE_JOBS_TABLE = "procrastinate_jobs"  # the engine's table, read only to repair chunks whose job ended
_LOCK_NAMESPACE = 0x52554E53  # "RUNS": the first key of the two-key advisory locks on one run


def require_postgres(url: URL, what: str) -> None:
    """Distributed runs share a run through PostgreSQL; a SQLite file is one host's."""
    if url.get_backend_name() != "postgresql":
        raise ReconcilerError(
            f"{what} needs a PostgreSQL state database; {url.get_backend_name()} ({url.render_as_string(hide_password=True)}) is a file on one host",
            hint="point --db or $RECONCILER_DATABASE_URL at PostgreSQL (postgresql://user@host/db), or run it in one process: reconciler run NAME",
        )


@dataclass(frozen=True)
class Chunk:
    id: uuid.UUID
    run_id: uuid.UUID
    chunk: int
    items: tuple[int, ...]
    state: str
    queue: str
    concurrency: int
    retry_failed: bool
    max_consecutive_failures: int
    use_cache: bool
    job_id: int | None
    worker: str | None
    attempts: int
    error: str | None
    enqueued_at: datetime


def _chunk(row: Any) -> Chunk:
    return Chunk(
        row.id,
        row.run_id,
        row.chunk,
        tuple(row.items),
        row.state,
        row.queue,
        row.concurrency,
        row.retry_failed,
        row.max_consecutive_failures or DEFAULT_MAX_CONSECUTIVE_FAILURES,
        row.use_cache is not False,  # NULL: a chunk queued before the column existed
        row.job_id,
        row.worker,
        row.attempts,
        row.error,
        row.enqueued_at,
    )


@contextlib.contextmanager
def run_lock(engine: Engine, run_id: uuid.UUID) -> Iterator[None]:
    """A session advisory lock on one run, on a connection of its own, for what spans several
    transactions: distributing the run, and finishing it once its chunks are closed."""
    key = int.from_bytes(bytes.fromhex(sha256_hex(str(run_id))[:8]), "big", signed=True)
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:ns, :key)"), {"ns": _LOCK_NAMESPACE, "key": key})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:ns, :key)"), {"ns": _LOCK_NAMESPACE, "key": key})
            conn.commit()


def _lock_run(conn: Connection, run_id: uuid.UUID) -> Any:
    """Lock the run's row for this transaction; its status and runner (not its inputs: they are large)."""
    r = analysis_runs.c
    return conn.execute(select(r.id, r.status, r.runner).where(r.id == run_id).with_for_update()).mappings().first()


@dataclass(frozen=True)
class ArmLink:
    """A chunk's run that is an experiment's arm: its chunks, stop and finish go with the experiment's."""

    experiment_id: uuid.UUID
    arm_index: int
    agent: str


def arm_of(conn: Connection, run_id: uuid.UUID) -> ArmLink | None:
    a = experiment_arms.c
    row = conn.execute(select(a.experiment_id, a.arm_index, a.agent_name).where(a.run_id == run_id)).first()
    return ArmLink(row.experiment_id, row.arm_index, row.agent_name) if row is not None else None


def unit_runs(conn: Connection, run_id: uuid.UUID, link: ArmLink | None = None) -> list[uuid.UUID]:
    """The runs distributed together with ``run_id`` (``link``: its arm, if it is one): every arm of
    its experiment, or the run alone."""
    a = experiment_arms.c
    link = link or arm_of(conn, run_id)
    if link is None:
        return [run_id]
    return list(conn.execute(select(a.run_id).where(a.experiment_id == link.experiment_id).order_by(a.arm_index)).scalars())


def _lock_unit(conn: Connection, run_id: uuid.UUID) -> tuple[Any, list[uuid.UUID]]:
    """Lock what a chunk's state changes under, an arm's experiment row first, then the run's row;
    the run's row and the runs distributed with it."""
    link = arm_of(conn, run_id)
    if link is None:
        return _lock_run(conn, run_id), [run_id]
    conn.execute(select(experiments.c.id).where(experiments.c.id == link.experiment_id).with_for_update())
    return _lock_run(conn, run_id), unit_runs(conn, run_id, link)


def find_run_by_id(engine: Engine, run_id: uuid.UUID) -> RunRecord:
    with engine.connect() as conn:
        row = conn.execute(select(analysis_runs).where(analysis_runs.c.id == run_id)).mappings().first()
    if row is None:
        raise ReconcilerError(f"run {run_id} is no longer in the database")
    return store.run_record(row)


def run_row(engine: Engine, run_id: uuid.UUID) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(select(analysis_runs).where(analysis_runs.c.id == run_id)).mappings().first()
    if row is None:
        raise ReconcilerError(f"run {run_id} is no longer in the database")
    return dict(row)


def open_chunks(conn: Connection, run_ids: Sequence[uuid.UUID]) -> int:
    c = run_chunks.c
    return int(conn.execute(select(func.count()).where(c.run_id.in_(list(run_ids)), c.state.in_(OPEN_STATES))).scalar_one())


@dataclass(frozen=True)
class ChunkSettings:
    """How the workers process a distribution's chunks (the same for every chunk of it)."""

    queue: str
    concurrency: int
    retry_failed: bool
    max_consecutive_failures: int
    use_cache: bool = True


def replace_chunks(
    conn: Connection, run_id: uuid.UUID, chunks: Sequence[tuple[int, Sequence[int]]], settings: ChunkSettings, now: datetime
) -> list[Chunk]:
    """Replace a run's chunk rows by ``chunks`` ((number, items) each), in the caller's transaction."""
    conn.execute(delete(run_chunks).where(run_chunks.c.run_id == run_id))
    rows = [
        {
            "id": uuid.uuid4(),
            "run_id": run_id,
            "chunk": n,
            "items": list(items),
            "state": "queued",
            "queue": settings.queue,
            "concurrency": settings.concurrency,
            "retry_failed": settings.retry_failed,
            "max_consecutive_failures": settings.max_consecutive_failures,
            "use_cache": settings.use_cache,
            "attempts": 0,
            "enqueued_at": now,
        }
        for n, items in chunks
    ]
    if rows:
        conn.execute(insert(run_chunks), rows)
    return [_chunk(_Row(row, job_id=None, worker=None, error=None)) for row in rows]


def claim_and_chunk(
    conn: Connection,
    record: RunRecord,
    snapshot: dict[str, Any],
    sha: str,
    chunks: Sequence[Sequence[int]],
    settings: ChunkSettings,
) -> list[Chunk]:
    """In the caller's transaction (the jobs are deferred in it too): mark the run running under the
    task queue (compare-and-swap on its status and runner, as a local run claims it), and replace its
    chunk rows by ``chunks``."""
    now = utcnow()
    values = store.claim_values(record.status, DISTRIBUTED_RUNNER, now, config_snapshot=snapshot, config_sha256=sha)
    store.compare_and_claim(conn, analysis_runs, record, values, "run", f"reconciler runs show {record.name}")
    return replace_chunks(conn, record.id, list(enumerate(chunks)), settings, now)


class _Row:
    """A dict as the attribute row ``_chunk`` reads."""

    def __init__(self, values: dict[str, Any], **more: Any) -> None:
        self.__dict__.update(values, **more)


def set_job_ids(conn: Connection, job_ids: dict[uuid.UUID, int]) -> None:
    for chunk_id, job_id in job_ids.items():
        conn.execute(update(run_chunks).where(run_chunks.c.id == chunk_id).values(job_id=job_id))


@dataclass(frozen=True)
class Taken:
    """A chunk a worker took, or why it has nothing to do."""

    chunk: Chunk | None
    skipped: str | None = None  # why the chunk is not processed (already finished, the run stopped)
    closed_last: bool = False  # taking it closed the run's last open chunk: finish the run


def take_chunk(engine: Engine, chunk_id: uuid.UUID, worker: str, attempt: int, max_attempts: int) -> Taken:
    """Mark a chunk running under ``worker``. A chunk already finished (its job ran twice) is
    skipped; one whose run stopped (another chunk could not go on) or that has been tried
    ``max_attempts`` times (its workers died) is stopped without being processed."""
    c = run_chunks.c
    with engine.begin() as conn:
        run_id = conn.execute(select(c.run_id).where(c.id == chunk_id)).scalar()
        if run_id is None:
            return Taken(None, "its chunk is gone (the run was distributed again)")
        run, unit = _lock_unit(conn, run_id)
        row = conn.execute(select(run_chunks).where(c.id == chunk_id).with_for_update()).first()
        if row is None:
            return Taken(None, "its chunk is gone (the run was distributed again)")
        if row.state not in OPEN_STATES:
            return Taken(None, f"chunk {row.chunk} is {row.state} already")
        why = None
        if run is None or run["status"] != "running" or run["runner"] != DISTRIBUTED_RUNNER:
            why = "not started: the run is no longer distributed"
        elif attempt >= max_attempts:
            why = f"gave up after {attempt} attempts: the workers that took it stopped or died before finishing it"
        else:
            stopped = conn.execute(select(c.chunk, c.error).where(c.run_id.in_(unit), c.state == "stopped").order_by(c.chunk).limit(1)).first()
            if stopped is not None:
                why = f"not started: chunk {stopped.chunk} stopped the run ({stopped.error})"
        now = utcnow()
        if why is not None:
            conn.execute(update(run_chunks).where(c.id == chunk_id).values(state="stopped", error=why, finished_at=now))
            return Taken(None, why, closed_last=open_chunks(conn, unit) == 0)
        conn.execute(update(run_chunks).where(c.id == chunk_id).values(state="running", worker=worker, attempts=c.attempts + 1, started_at=now))
        return Taken(_chunk(conn.execute(select(run_chunks).where(c.id == chunk_id)).one()))


def requeue_chunk(engine: Engine, chunk_id: uuid.UUID) -> None:
    """Back to queued: its worker stopped (SIGTERM) before finishing it; the queue retries its job."""
    c = run_chunks.c
    with engine.begin() as conn:
        conn.execute(update(run_chunks).where(c.id == chunk_id, c.state == "running").values(state="queued"))


def finish_chunk(engine: Engine, chunk: Chunk, state: ChunkState, error: str | None = None) -> bool:
    """Close a chunk (done, or stopped with why); True when no chunk of its run (or of any arm of its
    experiment) is open any more."""
    c = run_chunks.c
    with engine.begin() as conn:
        _, unit = _lock_unit(conn, chunk.run_id)
        conn.execute(update(run_chunks).where(c.id == chunk.id, c.state.in_(OPEN_STATES)).values(state=state, error=error, finished_at=utcnow()))
        return open_chunks(conn, unit) == 0


def stored_items(engine: Engine, run_id: uuid.UUID, items: Sequence[int], *, retry_failed: bool, before: datetime) -> set[int]:
    """Which of ``items`` have a result to keep: any result, or with ``retry_failed`` a valid one or
    one stored since ``before`` (the chunk was queued: an earlier try of it redid the item already)."""
    c = run_results.c
    query = select(c.item_index, c.valid, c.created_at).where(c.run_id == run_id, c.item_index.in_(list(items)))
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return {r.item_index for r in rows if not retry_failed or r.valid or r.created_at >= before}


def save_results(
    engine: Engine,
    run_id: uuid.UUID,
    rows: list[dict[str, Any]],
    worker: str,
    *,
    replace_failed_before: datetime | None = None,
    answers: Sequence[tuple[CacheKey, CachedAnswer]] = (),
) -> int:
    """Store finished items exactly once and beat the run's heart; returns how many were stored.

    The first result of an item wins (``ON CONFLICT DO NOTHING`` on (run_id, item_index)): a worker
    the queue took for dead that comes back cannot store an item twice or replace another's result.
    With ``replace_failed_before`` (``--retry-failed``), a failed result stored before the chunk
    was queued is replaced, once. ``answers`` go to the answer cache in the same transaction."""
    now = utcnow()
    with engine.begin() as conn:
        _lock_run(conn, run_id)  # serialises the counters below with the other workers' writes
        stored = 0
        if rows:
            values = [{"id": uuid.uuid4(), "run_id": run_id, "created_at": now, "worker": worker, **r} for r in rows]
            statement = pg_insert(run_results).values(values)
            if replace_failed_before is None:
                statement = statement.on_conflict_do_nothing(constraint="uq_run_item")
            else:
                kept = {"id", "run_id", "item_index"}
                c = run_results.c
                statement = statement.on_conflict_do_update(
                    constraint="uq_run_item",
                    set_={col.name: statement.excluded[col.name] for col in run_results.columns if col.name not in kept},
                    where=c.valid.is_(False) & (c.created_at < replace_failed_before),
                )
            stored = len(conn.execute(statement.returning(run_results.c.item_index)).all())
            store.refresh_counters(conn, run_id, now)
            answer_cache.insert_answers(conn, answers)
        else:
            conn.execute(update(analysis_runs).where(analysis_runs.c.id == run_id).values(heartbeat_at=now))
    return stored


@dataclass(frozen=True)
class WorkerProgress:
    worker: str
    items: int  # results it stored for this run
    last_result_at: datetime | None
    chunks_running: tuple[int, ...]


@dataclass(frozen=True)
class Distribution:
    """Where a distributed run's chunks are (the latest distribution of the run)."""

    chunks: int
    by_state: dict[str, int]
    enqueued_at: datetime | None
    stopped_reason: str | None  # the first stopped chunk's reason
    last_transient_error: str | None  # a done chunk's items that got only transient errors: the last one
    stored_since: int  # results stored since it was distributed
    workers: tuple[WorkerProgress, ...]

    @property
    def open(self) -> int:
        return sum(self.by_state.get(s, 0) for s in OPEN_STATES)


def distribution(engine: Engine, run_id: uuid.UUID | Sequence[uuid.UUID]) -> Distribution | None:
    """Summed over ``run_id`` (a run, or every arm of an experiment); None for one never distributed.
    An experiment's chunks are numbered across its arms, in the order they were queued."""
    c, res = run_chunks.c, run_results.c
    ids = [run_id] if isinstance(run_id, uuid.UUID) else list(run_id)
    with engine.connect() as conn:
        rows = conn.execute(select(c.chunk, c.state, c.worker, c.error, c.enqueued_at).where(c.run_id.in_(ids)).order_by(c.chunk)).all()
        if not rows:
            return None
        enqueued_at = min(r.enqueued_at for r in rows)
        per_worker = conn.execute(
            select(res.worker, func.count().label("items"), func.max(res.created_at).label("last"))
            .where(res.run_id.in_(ids), res.worker.is_not(None))
            .group_by(res.worker)
        ).all()
        stored_since = int(conn.execute(select(func.count()).where(res.run_id.in_(ids), res.created_at >= enqueued_at)).scalar_one())
    by_state: dict[str, int] = {}
    for r in rows:
        by_state[r.state] = by_state.get(r.state, 0) + 1
    running: dict[str, list[int]] = {}
    for r in rows:
        if r.state == "running" and r.worker:
            running.setdefault(r.worker, []).append(r.chunk)
    stored = {w.worker: w for w in per_worker}
    names = sorted(set(stored) | set(running))
    workers = tuple(
        WorkerProgress(
            name,
            int(stored[name].items) if name in stored else 0,
            stored[name].last if name in stored else None,
            tuple(running.get(name, ())),
        )
        for name in names
    )
    stopped = next((r.error for r in rows if r.state == "stopped"), None)
    transient = next((r.error for r in reversed(rows) if r.state == "done" and r.error), None)
    return Distribution(len(rows), by_state, enqueued_at, stopped, transient, stored_since, workers)


def runs_to_finish(engine: Engine) -> list[uuid.UUID]:
    """Distributed runs whose chunks are all closed but that are still marked running (the worker
    that closed the last one died before finishing the run); for an experiment, one of its arms."""
    r, c, a, e = analysis_runs.c, run_chunks.c, experiment_arms.c, experiments.c
    still_open = select(c.run_id).where(c.state.in_(OPEN_STATES))
    open_experiments = select(a.experiment_id).where(a.run_id.in_(still_open))
    with engine.connect() as conn:
        runs = conn.execute(select(r.id).where(r.status == "running", r.runner == DISTRIBUTED_RUNNER, r.id.not_in(still_open))).scalars()
        first_arms = conn.execute(
            select(a.run_id)
            .select_from(experiment_arms.join(experiments, e.id == a.experiment_id))
            .where(a.arm_index == 0, e.status == "running", e.runner == DISTRIBUTED_RUNNER, e.id.not_in(open_experiments))
        ).scalars()
        return list(dict.fromkeys([*runs, *first_arms]))


def queue_worker_exists(engine: Engine, worker_id: int) -> bool:
    with engine.connect() as conn:
        return conn.execute(text("SELECT 1 FROM procrastinate_workers WHERE id = :id"), {"id": worker_id}).first() is not None


def orphaned_chunks(engine: Engine) -> list[tuple[Chunk, str]]:
    """Open chunks whose job can no longer run them: it ended (failed, cancelled, aborted, or
    succeeded without closing the chunk) or is gone. The queue will not retry those."""
    query = text(
        f"SELECT c.id, j.status::text AS job_status FROM run_chunks c LEFT JOIN {QUEUE_JOBS_TABLE} j ON j.id = c.job_id "
        "WHERE c.state IN ('queued', 'running') AND c.job_id IS NOT NULL AND (j.id IS NULL OR j.status::text NOT IN ('todo', 'doing'))"
    )
    with engine.connect() as conn:
        found = {row.id: row.job_status for row in conn.execute(query)}
        if not found:
            return []
        chunks = conn.execute(select(run_chunks).where(run_chunks.c.id.in_(list(found)))).all()
    return [(_chunk(row), found[row.id] or "gone") for row in chunks]
