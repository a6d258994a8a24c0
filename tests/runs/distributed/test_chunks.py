"""Cutting items into chunks, naming workers, and which failed chunk jobs the queue retries: pure."""

from __future__ import annotations

import asyncio

import pytest
from procrastinate.jobs import Job
from sqlalchemy.exc import OperationalError

from reconciler.errors import ReconcilerError, StateError
from reconciler.runs.distributed.chunks import WorkerName, cut, default_chunk_size
from reconciler.runs.distributed.queue import MAX_ATTEMPTS, ChunkRequeued, ChunkRetry


@pytest.mark.parametrize(
    ("todo", "concurrency", "size"),
    [(0, 1, 4), (1, 1, 4), (20, 1, 4), (256, 1, 4), (257, 1, 5), (1_000, 1, 16), (6_400, 1, 100), (100_000, 1, 100),
     (20, 4, 16), (300, 4, 16), (1_000, 32, 100), (100_000, 256, 100)],
    ids=lambda v: str(v),
)
def test_default_chunk_size_about_64_chunks_of_4_rounds_at_least_and_100_items_at_most(todo: int, concurrency: int, size: int) -> None:
    assert default_chunk_size(todo, concurrency) == size


@pytest.mark.parametrize(
    ("indexes", "size", "chunks"),
    [
        ([], 3, []),
        ([4, 0, 2, 1, 3], 2, [[0, 1], [2, 3], [4]]),
        ([7, 9, 11], 5, [[7, 9, 11]]),  # a resume: only the unfinished items, in order
        ([0, 1, 2], 1, [[0], [1], [2]]),
    ],
    ids=["nothing", "uneven", "resume", "singles"],
)
def test_cut(indexes: list[int], size: int, chunks: list[list[int]]) -> None:
    assert cut(indexes, size) == chunks


def test_cut_refuses_an_empty_chunk() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        cut([1], 0)


@pytest.mark.parametrize(
    ("value", "name"),
    [("host-a:123", WorkerName("host-a", 123)), ("a:b:9", WorkerName("a:b", 9)), ("task-queue", WorkerName("task-queue", None))],
    ids=["plain", "colon-in-host", "not-a-worker"],
)
def test_worker_name_parse_and_back(value: str, name: WorkerName) -> None:
    assert WorkerName.parse(value) == name
    assert str(name) == value


def _job(attempts: int) -> Job:
    return Job(id=1, queue="runs", lock=None, queueing_lock=None, task_name="reconciler.run_chunk", attempts=attempts)


@pytest.mark.parametrize(
    ("exception", "attempts", "retry_in"),
    [
        (ChunkRequeued("stopping"), 0, 0),
        (ChunkRequeued("stopping"), MAX_ATTEMPTS + 5, 0),  # the chunk is given up when taken, not here
        (asyncio.CancelledError(), 3, 0),
        (StateError("database down"), 0, 2),
        (StateError("database down"), 4, 32),
        (OperationalError("SELECT 1", {}, Exception("gone")), 7, 60),
        (StateError("database down"), MAX_ATTEMPTS - 1, None),
        (ReconcilerError("a bug"), 0, None),
        (ValueError("a bug"), 0, None),
    ],
    ids=["requeued", "requeued-often", "cancelled", "db-1st", "db-5th", "db-capped", "db-exhausted", "user-error", "bug"],
)
def test_which_chunk_failures_the_queue_retries(exception: BaseException, attempts: int, retry_in: int | None) -> None:
    from procrastinate import utils

    decision = ChunkRetry().get_retry_decision(exception=exception, job=_job(attempts))
    if retry_in is None:
        assert decision is None
        return
    assert decision is not None and decision.retry_at is not None
    assert round((decision.retry_at - utils.utcnow()).total_seconds()) == retry_in
