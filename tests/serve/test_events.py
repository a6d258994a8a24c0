"""Live events: the pure differencing, the fan-out hub, the poller's cost when idle, and SSE end to
end while other processes apply, validate, run and edit the database."""

from __future__ import annotations

import asyncio
import subprocess
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, update

from reconciler.serve.events import Hub, Message, Poller, ProviderState, Pulse, pulse_events, sse_stream
from reconciler.serve.source import StateSource
from reconciler.state.db import open_engine
from reconciler.state.tables import agent_configs
from tests.serve.conftest import State

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)


def _pulse(providers: dict[str, tuple[str, str | None, datetime | None]] | None = None, runs: dict[str, dict[str, Any]] | None = None) -> Pulse:
    return Pulse(
        0,
        {pid: ProviderState(pid, f"p-{pid}", status, error, at) for pid, (status, error, at) in (providers or {}).items()},
        runs or {},
    )


def _run(status: str, done: int) -> dict[str, Any]:
    return {"name": "r", "status": status, "items_total": 4, "items_done": done, "items_succeeded": done, "items_failed": 0}


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(_pulse({"1": ("pending", None, None)}), _pulse({"1": ("pending", None, None)}), [], id="nothing-changed"),
        pytest.param(
            _pulse({"1": ("pending", None, None)}), _pulse({"1": ("validating", None, None)}),
            [("validation_update", "1", "validating", None)], id="status",
        ),
        pytest.param(
            _pulse({"1": ("error", "refused", T0)}), _pulse({"1": ("error", "refused", T1)}),
            [("validation_update", "1", "error", "refused")], id="revalidated-same-outcome",
        ),
        pytest.param(_pulse(), _pulse({"2": ("pending", None, None)}), [("validation_update", "2", "pending", None)], id="new-provider"),
        pytest.param(_pulse({"1": ("pending", None, None)}), _pulse(), [], id="removed-provider"),
        pytest.param(_pulse(runs={"r": _run("running", 1)}), _pulse(runs={"r": _run("running", 3)}), [("run", "r", "running", 3)], id="run-progress"),
        pytest.param(_pulse(runs={"r": _run("running", 4)}), _pulse(runs={"r": _run("completed", 4)}), [("run", "r", "completed", 4)], id="run-done"),
        pytest.param(_pulse(runs={"r": _run("running", 1)}), _pulse(runs={"r": _run("running", 1)}), [], id="run-idle"),
    ],
)
def test_pulse_events(old: Pulse, new: Pulse, expected: list[tuple[Any, ...]]) -> None:
    got = []
    for e in pulse_events(old, new):
        if e["event"] == "validation_update":
            got.append((e["event"], e["provider_id"], e["validation_status"], e["validation_error"]))
        else:
            got.append((e["event"], e["name"], e["status"], e["items_done"]))
    assert got == expected


def test_validation_update_has_the_seeds_payload() -> None:
    [e] = pulse_events(_pulse({"1": ("pending", None, None)}), _pulse({"1": ("error", "connection refused", T1)}))
    assert {k: e[k] for k in ("event", "provider_id", "validation_status", "validation_error")} == {
        "event": "validation_update", "provider_id": "1", "validation_status": "error", "validation_error": "connection refused",
    }
    assert e["provider"] == "p-1" and e["validated_at"] == "2026-01-01T00:00:05+00:00"


def test_hub_fans_out_replays_and_drops_a_stalled_subscriber() -> None:
    async def scenario() -> None:
        hub = Hub(backlog=10, queue_size=3)
        fast, slow = hub.subscribe(), hub.subscribe()
        first = hub.publish({"event": "apply", "id": 1})
        assert await fast.next(1) == first
        for i in range(2, 6):  # slow reads nothing: after 3 queued it is dropped
            hub.publish({"event": "apply", "id": i})
            assert (await fast.next(1)).data["id"] == i  # type: ignore[union-attr]
        assert hub.subscribers == 1
        queued = [await slow.next(1) for _ in range(4)]
        assert [m.data.get("id") for m in queued[:3] if isinstance(m, Message)] == [1, 2, 3]
        assert queued[3] is not None and queued[3].event == ""  # the end of its stream
        replay = hub.subscribe(last_id=3)
        assert [(await replay.next(1)).id for _ in range(2)] == [4, 5]  # type: ignore[union-attr]
        assert await replay.next(0.05) is None
        hub.close()
        assert hub.subscribers == 0
        assert (await fast.next(1)).event == ""  # type: ignore[union-attr]

    asyncio.run(scenario())


def test_sse_stream_bytes() -> None:
    async def scenario() -> list[bytes]:
        hub = Hub()
        stream = sse_stream(hub, None, keepalive=0.05)
        out = [await stream.__anext__(), await stream.__anext__()]
        hub.publish({"event": "apply", "id": 7})
        out.append(await stream.__anext__())
        out.append(await stream.__anext__())  # nothing for 50 ms: a keepalive comment
        hub.close()
        out += [chunk async for chunk in stream]
        return out

    assert asyncio.run(scenario()) == [
        b"retry: 1000\n\n",
        b'event: ready\ndata: {"event":"ready","last_id":0}\n\n',
        b'id: 1\nevent: apply\ndata: {"event":"apply","id":7}\n\n',
        b": keepalive\n\n",
    ]


def test_an_idle_database_costs_no_query_per_tick(sqlite_state: State) -> None:
    """Between commits the poller asks SQLite only for its data_version (not a statement SQLAlchemy
    sees); a commit by another connection makes the next tick read a pulse."""

    async def scenario() -> tuple[int, int, list[dict[str, Any]]]:
        source = StateSource(sqlite_state.url)
        engine = source.engine()
        assert engine is not None
        statements: list[str] = []
        event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        poller = Poller(source, Hub(), interval=0.01, full_every=3600)
        await poller.tick()  # the baseline
        baseline = len(statements)
        for _ in range(20):
            await poller.tick()
        idle = len(statements) - baseline
        writer = open_engine(sqlite_state.url, create=False)
        with writer.begin() as conn:
            conn.execute(update(agent_configs).where(agent_configs.c.name == "classifier").values(temperature=0.5))
        found = await poller.tick()
        return baseline, idle, found

    baseline, idle, found = asyncio.run(scenario())
    assert baseline > 0 and idle == 0
    assert found == []  # a temperature change is no pulse event (it is drift: see below)


def test_events_reach_a_client_from_other_processes(state: State, live: Any, events: Any, tmp_path: Any) -> None:
    """Apply (with its git commit), provider validation, drift and a run, each made by another process
    or connection, arrive as SSE events (SQLite: data_version; PostgreSQL: the snapshot's xmax)."""
    root = state.root
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    server = live(state.url)
    reader = events(server.url + "/api/v1/events")

    # an apply in another process: its history entry, with the commit it came from
    state.write(prompt="Classify the message in one word.")
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "shorter prompt"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    state.apply("--no-validate")
    applied = reader.wait(lambda e: e["_event"] == "apply")
    assert {k: applied[k] for k in ("event", "command", "git_commit", "git_subject", "created", "updated", "deleted")} == {
        "event": "apply", "command": "apply", "git_commit": head, "git_subject": "shorter prompt", "created": 0, "updated": 1, "deleted": 0,
    }

    # provider validation by another process: the seed's validation_update
    state.cli("providers", "check", "stub")
    update_ = reader.wait(lambda e: e["_event"] == "validation_update" and e["validation_status"] != "validating")
    stub_id = server.get("/api/v1/providers/stub").json()["id"]
    assert (update_["event"], update_["provider_id"], update_["validation_status"], update_["validation_error"]) == (
        "validation_update", stub_id, "connected", None,
    )

    # drift: an edit through another connection, as another service would make it
    writer = open_engine(state.url, create=False)
    with writer.begin() as conn:
        conn.execute(update(agent_configs).where(agent_configs.c.name == "classifier").values(temperature=1.1))
    drift = reader.wait(lambda e: e["_event"] == "drift" and e["count"] == 1)
    assert drift["drift"][0]["name"] == "classifier" and drift["drift"][0]["fields"][0]["field"] == "temperature"
    state.apply("--no-validate")  # puts it back
    reader.wait(lambda e: e["_event"] == "drift" and e["count"] == 0)

    # a run in another process: its progress until it completes
    state.cli("run", str(state.run_manifest("live")))
    done = reader.wait(lambda e: e["_event"] == "run" and e["name"] == "live" and e["status"] == "completed")
    assert (done["items_total"], done["items_done"], done["accuracy"]) == (4, 4, 1.0)


def test_a_reconnecting_client_replays_what_it_missed(sqlite_state: State, live: Any, events: Any) -> None:
    server = live(sqlite_state.url)
    first = events(server.url + "/api/v1/events")
    sqlite_state.cli("providers", "check", "stub")
    missed = first.wait(lambda e: e["_event"] == "validation_update" and e["validation_status"] == "connected")
    first.close()
    again = events(server.url + "/api/v1/events", headers={"Last-Event-ID": str(missed["_id"] - 1)})
    replayed = again.wait(lambda e: e["_event"] == "validation_update" and e["validation_status"] == "connected")
    assert (replayed["_id"], replayed["validated_at"]) == (missed["_id"], missed["validated_at"])


class _Flaky:
    """A StateSource whose database can be made unreachable (as a server restart or a lost network does)."""

    def __init__(self, real: StateSource) -> None:
        self.real, self.down = real, False
        self.display = real.display

    def engine(self) -> Any:
        if self.down:
            from reconciler.errors import StateError

            raise StateError("database error while opening the database: connection refused")
        return self.real.engine()

    def dispose(self) -> None:
        self.real.dispose()


def test_an_unreachable_database_is_an_event_and_a_503(sqlite_state: State) -> None:
    import httpx

    from reconciler.serve.app import ServeSettings, create_app
    from tests.serve.conftest import LiveServer

    source = _Flaky(StateSource(sqlite_state.url))

    async def ticks() -> list[list[dict[str, Any]]]:
        poller = Poller(source, Hub(), interval=0.01)
        out = [await poller.tick()]
        source.down = True
        out += [await poller.tick(), await poller.tick()]
        source.down = False
        out.append(await poller.tick())
        return out

    baseline, lost, still, back = asyncio.run(ticks())
    assert (baseline, still) == ([], [])
    assert lost == [{"event": "database", "reachable": False, "message": "database error while opening the database: connection refused"}]
    assert back == [{"event": "database", "reachable": True, "message": None}]

    source.down = True
    with LiveServer(create_app(ServeSettings(db=sqlite_state.url), source)) as server:  # type: ignore[arg-type]
        response = httpx.get(server.url + "/api/v1/providers", timeout=30)
        assert response.status_code == 503
        assert response.json()["message"].startswith("the state database cannot be read: database error")
        page = httpx.get(server.url + "/", timeout=30)
        assert page.status_code == 503


@pytest.mark.postgres
def test_commit_counter_sees_postgresql_transactions_that_end_out_of_order(pg_url: str) -> None:
    """An earlier writer that commits after a later one moves no transaction id bound (xmax stays),
    only the list of transactions in progress: the counter must change all the same, or the SSE
    events of that commit wait for the next one."""
    from sqlalchemy import create_engine, text

    from reconciler.serve.events import CommitCounter
    from reconciler.state.db import database_url

    engine = create_engine(database_url(pg_url))
    counter = CommitCounter(engine)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE IF NOT EXISTS commit_counter_probe (x integer)"))
        with engine.connect() as early, engine.connect() as late:
            early.execute(text("INSERT INTO commit_counter_probe VALUES (1)"))
            late.execute(text("INSERT INTO commit_counter_probe VALUES (2)"))
            before = counter.read()
            assert counter.read() == before  # nothing ended: the same value
            late.commit()
            after_late = counter.read()
            early.commit()
            after_early = counter.read()
        assert len({before, after_late, after_early}) == 3
    finally:
        counter.close()
        engine.dispose()
