"""Live events: what changed in the database, whichever process changed it, fanned out to every
subscriber as Server-Sent Events.

One poller per server reads a cheap *pulse* of the database (newest history id, provider
statuses, run counters) every ``interval`` seconds and turns the difference between two pulses
into events. Before a pulse it asks the database whether anything was committed at all
(SQLite's ``PRAGMA data_version``, PostgreSQL's snapshot xmax), so an idle database costs one
trivial statement per tick. Drift needs the whole snapshot (0.4 s at 10,000 resources), so it is
recomputed only while someone listens, only after a commit, and never more than half the time.

Event payloads (the ``data`` of each SSE message, also its ``event`` name):

- ``validation_update``: the seed's payload (provider, provider_id, validation_status,
  validation_error, validated_at), as ``reconciler providers check --json`` prints it;
- ``apply``: a new history entry (id, command, commit, counts);
- ``drift``: the drift now (count and the drifted resources), whenever it changes;
- ``run``: a run's status and counters, whenever they change;
- ``experiment``: an experiment's progress, when experiments are available;
- ``database``: the database became unreachable or reachable again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError

from reconciler.errors import ReconcilerError
from reconciler.providers.events import validation_event
from reconciler.serve import queries
from reconciler.serve.wire import dumps, reason_of
from reconciler.state.tables import llm_providers, reconciler_applies

log = logging.getLogger("reconciler.serve")

Event = dict[str, Any]
KEEPALIVE_SECONDS = 15.0
RECONNECT_MS = 1000  # the browser's EventSource waits this long before reconnecting
MAX_APPLY_EVENTS = 50  # per tick; an older backlog is in /api/v1/history


# -- fan-out -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    id: int
    event: str
    data: Event

    def encode(self) -> bytes:
        return b"id: %d\nevent: %s\ndata: %s\n\n" % (self.id, self.event.encode(), dumps(self.data))


_CLOSED = Message(0, "", {})


class Subscription:
    """One subscriber's queue of messages; ``close`` when the client goes away."""

    def __init__(self, hub: Hub, queue: asyncio.Queue[Message]) -> None:
        self._hub = hub
        self.queue = queue

    async def next(self, timeout: float) -> Message | None:
        """The next message; None after ``timeout`` seconds without one; ``_CLOSED`` at the end."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None

    def close(self) -> None:
        self._hub._queues.discard(self.queue)


class Hub:
    """Fans events out to subscribers; keeps the last ``backlog`` so a reconnecting client that
    sends ``Last-Event-ID`` misses nothing. Used from the server's event loop only. A subscriber
    that falls ``queue_size`` messages behind is dropped (its stream ends; the browser reconnects
    and replays what it missed), so one stalled client cannot grow the server's memory."""

    def __init__(self, backlog: int = 256, queue_size: int = 1024) -> None:
        self._recent: deque[Message] = deque(maxlen=backlog)
        self._queues: set[asyncio.Queue[Message]] = set()
        self._queue_size = queue_size
        self._next_id = 1
        self.closed = False

    @property
    def subscribers(self) -> int:
        return len(self._queues)

    @property
    def last_id(self) -> int:
        return self._next_id - 1

    def publish(self, data: Event) -> Message:
        message = Message(self._next_id, str(data["event"]), data)
        self._next_id += 1
        self._recent.append(message)
        for queue in list(self._queues):
            if queue.qsize() >= self._queue_size:
                self._end(queue)
            else:
                queue.put_nowait(message)
        return message

    def _end(self, queue: asyncio.Queue[Message]) -> None:
        self._queues.discard(queue)
        queue.put_nowait(_CLOSED)  # the one slot kept free for it

    def close(self) -> None:
        """End every subscription (the server is stopping: open streams must not hold it up)."""
        self.closed = True
        for queue in list(self._queues):
            self._end(queue)

    def subscribe(self, last_id: int | None = None) -> Subscription:
        queue: asyncio.Queue[Message] = asyncio.Queue(self._queue_size + 1)
        if last_id is not None:
            missed = [m for m in self._recent if m.id > last_id][-self._queue_size :]
            for message in missed:
                queue.put_nowait(message)
        if self.closed:
            queue.put_nowait(_CLOSED)
        else:
            self._queues.add(queue)
        return Subscription(self, queue)


async def sse_stream(hub: Hub, last_id: int | None, keepalive: float = KEEPALIVE_SECONDS) -> AsyncIterator[bytes]:
    """The bytes of an SSE response: the reconnect delay, a ``ready`` event, then every event."""
    subscription = hub.subscribe(last_id)
    try:
        yield b"retry: %d\n\n" % RECONNECT_MS
        yield b"event: ready\ndata: %s\n\n" % dumps({"event": "ready", "last_id": hub.last_id})
        while True:
            message = await subscription.next(keepalive)
            if message is None:
                yield b": keepalive\n\n"
            elif message is _CLOSED:
                return
            else:
                yield message.encode()
    finally:
        subscription.close()


# -- the pulse: a cheap picture of what events are about -----------------------------------------


@dataclass(frozen=True)
class ProviderState:
    id: str
    name: str
    status: str
    error: str | None
    validated_at: datetime | None


@dataclass(frozen=True)
class Pulse:
    last_apply_id: int
    providers: dict[str, ProviderState]
    runs: dict[str, Event]  # run id -> its row (as /api/v1/runs shows it)
    experiments: dict[str, Event] = field(default_factory=dict)


def read_pulse(engine: Engine, extra: Callable[[Engine], dict[str, Event]] | None = None) -> Pulse:
    p, h = llm_providers.c, reconciler_applies.c
    with engine.connect() as conn:
        book = queries.has_bookkeeping(conn)
        last = conn.execute(select(h.id).order_by(h.id.desc()).limit(1)).scalar() if book else None
        providers = {
            str(r.id): ProviderState(str(r.id), r.name, r.validation_status, r.validation_error, r.validated_at)
            for r in conn.execute(select(p.id, p.name, p.validation_status, p.validation_error, p.validated_at))
        }
        runs: dict[str, Event] = {}
        if book:
            for r in conn.execute(queries._run_query()):
                row = queries._run_row(r)
                runs[row["id"]] = row
    return Pulse(int(last or 0), providers, runs, extra(engine) if extra is not None else {})


RUN_EVENT_FIELDS = (
    "name",
    "status",
    "error",
    "assignment",
    "items_total",
    "items_done",
    *queries.RUN_TOTALS,
    "config_sha256",
    "started_at",
    "completed_at",
)


def pulse_events(old: Pulse, new: Pulse) -> list[Event]:
    """The events that take ``old`` to ``new`` (history rows are read separately: see ``apply_events``)."""
    out: list[Event] = []
    for pid, state in new.providers.items():
        before = old.providers.get(pid)
        if before is None or (before.status, before.error, before.validated_at) != (state.status, state.error, state.validated_at):
            out.append(validation_event(state.name, pid, state.status, state.error, state.validated_at))
    for rid, row in new.runs.items():
        was = old.runs.get(rid)
        if was is None or any(was.get(k) != row.get(k) for k in RUN_EVENT_FIELDS):
            out.append({"event": "run", **{k: row.get(k) for k in RUN_EVENT_FIELDS}})
    for name, progress in new.experiments.items():
        if old.experiments.get(name) != progress:
            out.append({"event": "experiment", **progress})
    return out


def apply_events(engine: Engine, after: int) -> list[Event]:
    rows = queries.list_history(engine, queries.Page(0, MAX_APPLY_EVENTS), after=after).rows
    return [
        {
            "event": "apply",
            **{k: r[k] for k in ("id", "command", "finished_at", "user", "git_commit", "git_dirty", "git_subject", "created", "updated", "deleted")},
        }
        for r in reversed(rows)
    ]


def drift_event(engine: Engine) -> Event:
    from reconciler.gitops.drift import detect_drift
    from reconciler.state.snapshot import load_snapshot

    drifts = [d.to_dict() for d in detect_drift(load_snapshot(engine))]
    return {"event": "drift", "count": len(drifts), "drift": drifts}


# -- change detection ----------------------------------------------------------------------------


class CommitCounter:
    """Something that changes whenever any other connection commits: an idle database is one
    trivial statement per tick. None means the backend cannot tell (then every tick reads a pulse)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._raw: Any = None

    def read(self) -> Any:
        backend = self._engine.url.get_backend_name()
        if backend == "sqlite":
            # data_version is per connection: keep one (autocommit, so it holds no lock between ticks)
            if self._raw is None:
                self._raw = self._engine.raw_connection()
            cursor = self._raw.cursor()
            try:
                cursor.execute("PRAGMA data_version")
                return cursor.fetchone()[0]
            finally:
                cursor.close()
        if backend == "postgresql":
            from reconciler.state.kept import commit_marker  # the one marker watch's kept snapshot uses too

            with self._engine.connect() as conn:
                return commit_marker(conn)
        return None

    def close(self) -> None:
        if self._raw is not None:
            with contextlib.suppress(Exception):
                self._raw.close()
            self._raw = None


# -- the poller ----------------------------------------------------------------------------------


class Poller:
    """Reads pulses and publishes their differences on ``hub``; one per server process."""

    def __init__(
        self,
        source: Any,
        hub: Hub,
        interval: float = 0.5,
        full_every: float = 5.0,
        extra: Callable[[Engine], dict[str, Event]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.hub = hub
        self.interval = interval
        self.full_every = full_every  # read a pulse at least this often (a killed runner changes nothing in the db)
        self.extra = extra
        self.clock = clock
        self.pulse: Pulse | None = None
        self.ticks = 0
        self._counter: CommitCounter | None = None
        self._token: Any = object()
        self._last_full = float("-inf")
        self._drift_dirty = True
        self._drift_task: asyncio.Task[None] | None = None
        self._drift_last: Event | None = None
        self._drift_next = 0.0
        self._db_ok = True

    async def run(self) -> None:
        try:
            while not self.hub.closed:
                await self.tick()
                await asyncio.sleep(self.interval)
        finally:
            if self._drift_task is not None:
                self._drift_task.cancel()
            if self._counter is not None:
                self._counter.close()

    async def tick(self) -> list[Event]:
        """One poll; returns (and publishes) the events it found."""
        self.ticks += 1
        try:
            events = await asyncio.to_thread(self._poll)
        except (SQLAlchemyError, ReconcilerError, OSError) as exc:
            if self._counter is not None:
                self._counter.close()
                self._counter = None
            self._token = object()
            events = [] if not self._db_ok else [{"event": "database", "reachable": False, "message": reason_of(exc)}]
            if self._db_ok:
                log.warning("reading the state database failed: %s", reason_of(exc))
            self._db_ok = False
            return self._publish(events)
        if not self._db_ok:
            events.insert(0, {"event": "database", "reachable": True, "message": None})
            self._db_ok = True
        self._maybe_drift()
        return self._publish(events)

    def _publish(self, events: list[Event]) -> list[Event]:
        for e in events:
            self.hub.publish(e)
        return events

    def _poll(self) -> list[Event]:
        engine = self.source.engine()
        if engine is None:
            return []
        if self._counter is None:
            self._counter = CommitCounter(engine)
        token = self._counter.read()
        now = self.clock()
        if token is not None and token == self._token and now - self._last_full < self.full_every:
            return []
        changed = token is None or token != self._token
        self._token, self._last_full = token, now
        new = read_pulse(engine, self.extra)
        old, self.pulse = self.pulse, new
        if changed:
            self._drift_dirty = True
        if old is None:
            return []  # the baseline: what was there before the server started is no event
        events = apply_events(engine, old.last_apply_id) if new.last_apply_id > old.last_apply_id else []
        return events + pulse_events(old, new)

    def _maybe_drift(self) -> None:
        if not self._drift_dirty or not self.hub.subscribers or self._drift_task is not None or self.clock() < self._drift_next:
            return
        self._drift_dirty = False
        self._drift_task = asyncio.get_running_loop().create_task(self._drift())

    async def _drift(self) -> None:
        started = self.clock()
        try:
            engine = self.source.engine()
            if engine is None:
                return
            event = await asyncio.to_thread(drift_event, engine)
            if event != self._drift_last:
                self._drift_last = event
                self.hub.publish(event)
        except (SQLAlchemyError, ReconcilerError, OSError) as exc:
            log.warning("checking drift failed: %s", reason_of(exc))
            self._drift_dirty = True
        finally:
            took = self.clock() - started
            # at most half the time on drift: 0.4 s at 10,000 resources means a check at most every 0.8 s
            self._drift_next = self.clock() + max(self.interval, took)
            self._drift_task = None

    def known_drift(self) -> Event | None:
        """The last drift check, while no commit came after it (the dashboard reuses it)."""
        if self._drift_dirty or self._drift_task is not None:
            return None
        return self._drift_last

    async def wait_drift(self) -> None:
        """Tests: wait for a drift check in flight."""
        if self._drift_task is not None:
            await self._drift_task
