"""Cutting a run's unfinished items into chunks, and naming workers: pure functions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

TARGET_CHUNKS = 64  # about this many chunks per distribution: enough to spread, few enough to be cheap
MAX_CHUNK_SIZE = 100  # items: a dead worker's chunk waits for the stall timeout, so bound what waits
ROUNDS_PER_CHUNK = 4


def default_chunk_size(todo: int, concurrency: int = 1) -> int:
    """About TARGET_CHUNKS chunks, so a few workers share even a short run; at most MAX_CHUNK_SIZE
    items; and at least ROUNDS_PER_CHUNK times the run's concurrency, so a chunk keeps a worker's
    slots for the run busy for a few rounds of requests and the hand-over to the next chunk (a few
    transactions) is a small part of its time. Bigger chunks cost nothing on a retry: the items a
    worker stored are kept, only the rest are redone."""
    return max(1, min(MAX_CHUNK_SIZE, max(ROUNDS_PER_CHUNK * concurrency, math.ceil(todo / TARGET_CHUNKS))))


def cut(indexes: Sequence[int], size: int) -> list[list[int]]:
    """``indexes`` in order, ``size`` at a time (the last chunk may be shorter)."""
    if size < 1:
        raise ValueError("chunk size must be at least 1")
    ordered = sorted(indexes)
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


@dataclass(frozen=True)
class WorkerName:
    """A worker as results and chunks record it: ``host:pid``."""

    host: str
    pid: int | None

    @staticmethod
    def parse(value: str) -> WorkerName:
        host, _, pid = value.rpartition(":")
        if not host or not pid.isdigit():
            return WorkerName(value, None)
        return WorkerName(host, int(pid))

    def __str__(self) -> str:
        return self.host if self.pid is None else f"{self.host}:{self.pid}"
