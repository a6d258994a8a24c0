"""The task engine: procrastinate on the state database. It leases each chunk's job to one worker,
keeps every worker's heartbeat, and retries a job whose worker stopped or died.

Why procrastinate: its queue is a few tables and functions in the PostgreSQL the state already
lives in (no broker to run), its schema is plain SQL that our Alembic migration installs, jobs can be
deferred in our own transaction (the chunk rows and their jobs commit together), and it has workers
with heartbeats and an API for the jobs of stalled workers.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import TypedDict

import procrastinate
from procrastinate import exceptions as queue_errors
from procrastinate.jobs import Job
from procrastinate.retry import BaseRetryStrategy, RetryDecision
from procrastinate.types import JSONValue
from sqlalchemy import Connection
from sqlalchemy.engine import URL

from reconciler.errors import StateError

CHUNK_TASK = "reconciler.run_chunk"
DEFAULT_QUEUE = "runs"
MAX_ATTEMPTS = 10  # takes of one chunk (its workers stopped or died) before it is given up
DATABASE_RETRY_CAP_SECONDS = 60

logger = logging.getLogger(__name__)


class ChunkRequeued(Exception):
    """The worker is stopping (SIGTERM) with items of the chunk not done: the queue retries its job."""


class ChunkRetry(BaseRetryStrategy):
    """A requeued chunk (its worker stopped) is retried at once, by whichever worker is free; one that failed on the
    database (unreachable for a moment) after a backoff; anything else is not retried (the chunk is
    then closed as stopped by the workers' repair pass)."""

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if isinstance(exception, (ChunkRequeued, asyncio.CancelledError)):  # the worker stopped: any other takes it
            return RetryDecision(retry_in={"seconds": 0})  # (a chunk taken MAX_ATTEMPTS times is stopped when taken)
        if job.attempts + 1 >= MAX_ATTEMPTS:
            return None
        if isinstance(exception, StateError) or type(exception).__name__ == "OperationalError":
            return RetryDecision(retry_in={"seconds": min(DATABASE_RETRY_CAP_SECONDS, 2 ** (job.attempts + 1))})
        return None


def conninfo(url: URL) -> str:
    """The libpq connection string of a SQLAlchemy PostgreSQL URL (the password kept)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class StallTimings(TypedDict):
    update_heartbeat_interval: float
    stalled_worker_timeout: float


ChunkHandler = Callable[[uuid.UUID, Job], Awaitable[None]]


def make_app(url: URL, handler: ChunkHandler | None = None) -> procrastinate.App:
    """An app on the state database; with ``handler``, the chunk task calls it (a worker)."""
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=conninfo(url), kwargs={"application_name": "reconciler-worker"}),
    )

    @app.task(name=CHUNK_TASK, pass_context=True, retry=ChunkRetry(), queue=DEFAULT_QUEUE)
    async def run_chunk(context: procrastinate.JobContext, chunk_id: str) -> None:
        if handler is None:
            raise RuntimeError("this app only defers chunks")
        await handler(uuid.UUID(chunk_id), context.job)

    return app


def defer_chunks(conn: Connection, url: URL, queue: str, chunk_ids: list[uuid.UUID]) -> list[int]:
    """Defer one job per chunk on ``conn``, inside the caller's transaction: chunks and jobs commit
    together or not at all. Returns the job ids, in order."""
    if not chunk_ids:
        return []
    app = make_app(url)
    driver = conn.connection.driver_connection  # the psycopg connection of this transaction
    deferrer = app.configure_task(CHUNK_TASK, queue=queue, connection=driver)
    jobs: list[dict[str, JSONValue]] = [{"chunk_id": str(c)} for c in chunk_ids]
    return deferrer.batch_defer(*jobs)


async def retry_stalled(app: procrastinate.App, stalled_after: float) -> list[int]:
    """Retry the chunk jobs of workers whose heartbeat is older than ``stalled_after`` seconds (killed,
    or cut off): another worker takes them. Workers run this concurrently; a job another retried
    first is skipped."""
    retried = []
    for job in await app.job_manager.get_stalled_jobs(task_name=CHUNK_TASK, seconds_since_heartbeat=stalled_after):
        try:
            await app.job_manager.retry_job(job)
        except queue_errors.ConnectorException:
            continue  # no longer doing: another worker retried it, or it finished
        assert job.id is not None
        retried.append(job.id)
    await app.job_manager.prune_stalled_workers(stalled_after)
    return retried


def stall_timings(stalled_after: float) -> StallTimings:
    """Heartbeat every third of the stall timeout, so one late beat does not make a worker stalled."""
    return {"update_heartbeat_interval": max(0.5, stalled_after / 3), "stalled_worker_timeout": stalled_after}
