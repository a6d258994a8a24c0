"""Reading and writing runs and their results (the only module of ``runs`` that touches the database)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from sqlalchemy import Engine, delete, func, insert, select, update

from reconciler.errors import ReconcilerError, RunAlreadyStarted
from reconciler.kinds.agent import agent_config
from reconciler.kinds.provider import provider_config
from reconciler.llm.ports import AgentConfig, ProviderConfig, TaskConfig
from reconciler.providers.model_check import ModelCheck, model_checks
from reconciler.runs import answer_cache
from reconciler.runs.answer_cache import CachedAnswer, CacheKey
from reconciler.state.tables import (
    agent_configs,
    agent_task_assignments,
    analysis_runs,
    llm_providers,
    reconciler_resources,
    run_results,
    task_configs,
    utcnow,
)

HEARTBEAT_STALE = timedelta(seconds=90)
# analysis_runs.runner of a run whose items are with the task queue (runs/distributed/): it is held
# until its last chunk is finished, whichever worker finishes it
DISTRIBUTED_RUNNER = "task-queue"


@dataclass(frozen=True)
class RunRecord:
    id: uuid.UUID
    name: str
    status: str
    spec: dict[str, Any]
    assignment_id: uuid.UUID | None
    config_sha256: str | None
    runner: str | None
    heartbeat_at: datetime | None
    elapsed_seconds: float | None


@dataclass(frozen=True)
class ResolvedConfig:
    """Everything a run needs from the configuration tables, plus whether each part is usable."""

    assignment: str
    agent: AgentConfig
    task: TaskConfig
    provider: ProviderConfig  # without the api key
    api_key_encrypted: bytes | None
    inactive: tuple[str, ...]  # e.g. ("provider 'x'",): what is switched off
    validation_status: str
    validation_error: str | None
    model_check: ModelCheck | None = None  # is the agent's model one the provider serves?


class Held(Protocol):
    """What tells whether a process still executes a run or an experiment."""

    @property
    def status(self) -> str: ...
    @property
    def runner(self) -> str | None: ...
    @property
    def heartbeat_at(self) -> datetime | None: ...


def runner_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


R = TypeVar("R")


def record_of(cls: type[R], row: Any, **columns: str) -> R:
    """A record dataclass from a row mapping: each field from the column of its name, or the one
    ``columns`` names for it; a spec that is NULL is empty."""
    values = {f.name: row[columns.get(f.name, f.name)] for f in fields(cls)}  # type: ignore[arg-type]
    if "spec" in values:
        values["spec"] = values["spec"] or {}
    return cls(**values)


def run_record(row: Any) -> RunRecord:
    """A run's row (as ``list_runs`` returns it) as a ``RunRecord``."""
    return record_of(RunRecord, row, assignment_id="agent_assignment_id")


def find_run(engine: Engine, name: str) -> RunRecord:
    r = analysis_runs.c
    with engine.connect() as conn:
        row = conn.execute(select(analysis_runs).where(r.name == name)).mappings().first()
    if row is None:
        raise ReconcilerError(
            f"no run named {name!r} in the database",
            hint="apply a Run manifest first (reconciler apply PATH), or pass the manifest file: reconciler run FILE",
        )
    return run_record(row)


def run_exists(engine: Engine, name: str) -> bool:
    with engine.connect() as conn:
        return conn.execute(select(analysis_runs.c.id).where(analysis_runs.c.name == name)).first() is not None


def _applied(conn: Any, kind: str, row_id: uuid.UUID) -> dict[str, Any]:
    m = reconciler_resources.c
    value = conn.execute(select(m.applied).where(m.kind == kind, m.row_id == row_id)).scalar()
    return value or {}


# The columns the LLM ports' configs are made from (``kinds.agent.agent_config`` and
# ``kinds.provider.provider_config`` map them), for runs, experiment arms and `reconciler test`.
def _config_columns(table: Any, prefix: str, *plain: str) -> tuple[Any, ...]:
    """The row's id, name and is_active as PREFIX_id, PREFIX_name and PREFIX_active, and ``plain``."""
    c = table.c
    return (c.id.label(f"{prefix}_id"), c.name.label(f"{prefix}_name"), *(c[n] for n in plain), c.is_active.label(f"{prefix}_active"))


AGENT_COLUMNS = _config_columns(agent_configs, "agent", "model_name", "system_prompt", "temperature", "max_tokens")
PROVIDER_COLUMNS = _config_columns(llm_providers, "provider", "type", "base_url", "api_key_encrypted", "validation_status", "validation_error")


def resolve_assignment(engine: Engine, assignment_id: uuid.UUID | None, run_name: str) -> ResolvedConfig:
    if assignment_id is None:
        raise ReconcilerError(
            f"run {run_name!r}: its assignment no longer exists",
            hint="give the run an existing assignment (spec.assignment) under a new run name and apply",
        )
    s, a, t, p = agent_task_assignments, agent_configs, task_configs, llm_providers
    m = reconciler_resources.c
    with engine.connect() as conn:
        row = (
            conn.execute(
                select(
                    s.c.is_active.label("assignment_active"),
                    *AGENT_COLUMNS,
                    t.c.name.label("task_name"),
                    t.c.response_schema,
                    t.c.is_active.label("task_active"),
                    *PROVIDER_COLUMNS,
                )
                .select_from(s.join(a, a.c.id == s.c.agent_id).join(t, t.c.id == s.c.task_id).join(p, p.c.id == a.c.provider_id))
                .where(s.c.id == assignment_id)
            )
            .mappings()
            .first()
        )
        if row is None:
            raise ReconcilerError(f"run {run_name!r}: its assignment no longer exists")
        assignment_name = (
            conn.execute(select(m.name).where(m.kind == "Assignment", m.row_id == assignment_id)).scalar()
            or f"{row['agent_name']}+{row['task_name']}"
        )
        agent_extra = _applied(conn, "Agent", row["agent_id"])
        provider_extra = _applied(conn, "Provider", row["provider_id"])
    inactive = tuple(
        label
        for label, active in (
            (f"assignment {assignment_name!r}", row["assignment_active"]),
            (f"agent {row['agent_name']!r}", row["agent_active"]),
            (f"task {row['task_name']!r}", row["task_active"]),
            (f"provider {row['provider_name']!r}", row["provider_active"]),
        )
        if not active
    )
    return ResolvedConfig(
        assignment=assignment_name,
        agent=agent_config(row["agent_name"], dict(row), agent_extra),
        task=TaskConfig(name=row["task_name"], response_schema=row["response_schema"] or {}),
        provider=provider_config(row["provider_name"], dict(row), provider_extra),
        api_key_encrypted=row["api_key_encrypted"],
        inactive=inactive,
        validation_status=row["validation_status"],
        validation_error=row["validation_error"],
        model_check=model_checks(engine, [row["agent_name"]]).get(row["agent_name"]),
    )


@dataclass(frozen=True)
class AgentContext:
    """An agent as ``reconciler test`` needs it: its configs, state, and the active tasks it is assigned to."""

    agent: AgentConfig
    provider: ProviderConfig  # without the key
    api_key_encrypted: bytes | None
    agent_active: bool
    provider_active: bool
    validation_status: str
    validation_error: str | None
    tasks: tuple[TaskConfig, ...]  # of its active assignments to active tasks, by name
    model_check: ModelCheck | None


def _named(conn: Any, table: Any, kind: str, name: str) -> Any:
    """The row by its name, or by the manifest name reconciler manages it by (its row may keep
    another name: reconciler/row-name)."""
    from sqlalchemy import inspect

    m = reconciler_resources.c
    managed = None
    if inspect(conn).has_table(reconciler_resources.name):
        managed = conn.execute(select(m.row_id).where(m.kind == kind, m.name == name)).scalar()
    return table.c.id == managed if managed is not None else table.c.name == name


def load_agent(engine: Engine, agent_name: str) -> AgentContext:
    """The agent named ``agent_name`` (by manifest or row name) with what `reconciler test` needs."""
    a, p, s, t = agent_configs, llm_providers, agent_task_assignments, task_configs
    with engine.connect() as conn:
        row = (
            conn.execute(select(*AGENT_COLUMNS, *PROVIDER_COLUMNS).join(p, p.c.id == a.c.provider_id).where(_named(conn, a, "Agent", agent_name)))
            .mappings()
            .first()
        )
        if row is None:
            raise ReconcilerError(f"no agent named {agent_name!r} in the database", hint="list them with `reconciler get agents`")
        tasks = conn.execute(
            select(t.c.name, t.c.response_schema)
            .join(s, s.c.task_id == t.c.id)
            .where(s.c.agent_id == row["agent_id"], s.c.is_active.is_(True), t.c.is_active.is_(True))
            .order_by(t.c.name)
        ).all()
        agent_extra = _applied(conn, "Agent", row["agent_id"])
        provider_extra = _applied(conn, "Provider", row["provider_id"])
    return AgentContext(
        agent=agent_config(row["agent_name"], dict(row), agent_extra),
        provider=provider_config(row["provider_name"], dict(row), provider_extra),
        api_key_encrypted=row["api_key_encrypted"],
        agent_active=bool(row["agent_active"]),
        provider_active=bool(row["provider_active"]),
        validation_status=row["validation_status"],
        validation_error=row["validation_error"],
        tasks=tuple(TaskConfig(r.name, r.response_schema or {}) for r in tasks),
        model_check=model_checks(engine, [row["agent_name"]]).get(row["agent_name"]),
    )


def find_task(engine: Engine, name: str) -> TaskConfig:
    """The task named ``name`` (by manifest or row name)."""
    t = task_configs
    with engine.connect() as conn:
        row = conn.execute(select(t.c.name, t.c.response_schema).where(_named(conn, t, "Task", name))).first()
    if row is None:
        raise ReconcilerError(f"no task named {name!r} in the database", hint="list them with `reconciler get tasks`")
    return TaskConfig(row.name, row.response_schema or {})


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed process its parent has not reaped yet still answers the signal: a zombie is gone
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True  # no /proc (macOS): trust the signal
    state = stat[stat.rfind(b")") + 2 :][:1]  # "pid (command) S ...": the command may hold ")"
    return state != b"Z"


def holder_is_alive(record: Held, now: datetime | None = None) -> bool:
    """Is another process still executing this run? Same host: ask the OS; else trust a fresh heartbeat."""
    if record.status != "running" or not record.runner or record.runner == runner_identity():
        return False
    if record.runner == DISTRIBUTED_RUNNER:
        return True
    host, _, pid = record.runner.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        return _pid_alive(int(pid))
    beat = record.heartbeat_at
    if beat is None:
        return False
    if beat.tzinfo is None:
        beat = beat.replace(tzinfo=UTC)
    return (now or utcnow()) - beat < HEARTBEAT_STALE


def owner_gone(record: Held, now: datetime | None = None) -> bool:
    """Marked running, but the process that ran it is gone (killed, or its host stopped beating):
    the run is interrupted, and ``reconciler run NAME`` resumes it."""
    return record.status == "running" and record.runner != runner_identity() and not holder_is_alive(record, now)


def claim_values(status: str, runner: str, now: datetime, **more: Any) -> dict[str, Any]:
    """What claiming a run or an experiment writes: running under ``runner``, its last error and
    completion cleared, started now if it was pending; and ``more``."""
    values: dict[str, Any] = {"status": "running", "runner": runner, "heartbeat_at": now, "updated_at": now, "error": None, "completed_at": None}
    if status == "pending":
        values["started_at"] = now
    return {**values, **more}


class Claimable(Held, Protocol):
    @property
    def id(self) -> uuid.UUID: ...
    @property
    def name(self) -> str: ...


def compare_and_claim(conn: Any, table: Any, record: Claimable, values: dict[str, Any], what: str, show: str) -> None:
    """Write ``values`` to the record's row if its status and runner are still those read (compare-and-
    swap): of two processes starting it at once, one wins, the other is told to watch it (``show``)."""
    c = table.c
    same_runner = c.runner.is_(None) if record.runner is None else c.runner == record.runner
    done = conn.execute(update(table).where(c.id == record.id, c.status == record.status, same_runner).values(**values)).rowcount
    if done != 1:
        raise RunAlreadyStarted(f"{what} {record.name!r} was started by another process just now", hint=f"watch it with `{show}`")


def claim_run(engine: Engine, record: RunRecord, snapshot: dict[str, Any], sha: str) -> datetime:
    """Mark the run running under this process (compare-and-swap on status and runner)."""
    now = utcnow()
    values = claim_values(record.status, runner_identity(), now, config_snapshot=snapshot, config_sha256=sha)
    with engine.begin() as conn:
        compare_and_claim(conn, analysis_runs, record, values, "run", f"reconciler runs show {record.name}")
    return now


def finished_indexes(engine: Engine, run_id: uuid.UUID, *, retry_failed: bool) -> set[int]:
    c = run_results.c
    query = select(c.item_index).where(c.run_id == run_id)
    if retry_failed:
        query = query.where(c.valid.is_(True))
    with engine.connect() as conn:
        return set(conn.execute(query).scalars())


def save_results(engine: Engine, run_id: uuid.UUID, rows: list[dict[str, Any]], answers: Sequence[tuple[CacheKey, CachedAnswer]] = ()) -> None:
    """Store finished items (replacing an earlier failed attempt of the same item) and the new answers
    for the answer cache, and beat the heart; no rows: only beat it (a run whose items are slow still
    shows that its runner is alive)."""
    now = utcnow()
    if not rows:
        with engine.begin() as conn:
            conn.execute(update(analysis_runs).where(analysis_runs.c.id == run_id).values(heartbeat_at=now))
        return
    with engine.begin() as conn:
        replace_results(conn, run_id, rows, now)
        answer_cache.insert_answers(conn, answers)
        refresh_counters(conn, run_id, now)


def replace_results(conn: Any, run_id: uuid.UUID, rows: list[dict[str, Any]], now: datetime) -> None:
    c = run_results.c
    conn.execute(delete(run_results).where(c.run_id == run_id, c.item_index.in_([r["item_index"] for r in rows])))
    conn.execute(insert(run_results), [{"id": uuid.uuid4(), "run_id": run_id, "created_at": now, **r} for r in rows])


def _counters(conn: Any, run_id: uuid.UUID) -> dict[str, int]:
    """The run's counters, summed over its stored results by the database."""
    c = run_results.c
    row = conn.execute(
        select(
            func.count().label("done"),
            func.coalesce(func.sum(c.input_tokens), 0).label("inp"),
            func.coalesce(func.sum(c.output_tokens), 0).label("out"),
            func.count().filter(c.valid.is_(True)).label("ok"),
        ).where(c.run_id == run_id)
    ).one()
    return {
        "items_succeeded": int(row.ok),
        "items_failed": int(row.done - row.ok),
        "input_tokens": int(row.inp),
        "output_tokens": int(row.out),
        "llm_tokens_used": int(row.inp + row.out),
    }


def refresh_counters(conn: Any, run_id: uuid.UUID, now: datetime) -> dict[str, int]:
    counters = _counters(conn, run_id)
    conn.execute(update(analysis_runs).where(analysis_runs.c.id == run_id).values(**counters, heartbeat_at=now, updated_at=now))
    return counters


def result_counters(engine: Engine, run_id: uuid.UUID) -> dict[str, int]:
    """items_succeeded, items_failed, input_tokens, output_tokens, llm_tokens_used (no rows loaded)."""
    with engine.connect() as conn:
        return _counters(conn, run_id)


def reused_count(engine: Engine, run_id: uuid.UUID) -> int:
    """How many of the run's stored answers came from the answer cache."""
    c = run_results.c
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).where(c.run_id == run_id, c.reused.is_(True))).scalar_one())


def valid_outputs(engine: Engine, run_id: uuid.UUID) -> list[tuple[Any, Any]]:
    """(input, output) of every valid result: what accuracy compares."""
    c = run_results.c
    with engine.connect() as conn:
        return [(r.input, r.output) for r in conn.execute(select(c.input, c.output).where(c.run_id == run_id, c.valid.is_(True)))]


def all_results(engine: Engine, run_id: uuid.UUID) -> list[dict[str, Any]]:
    c = run_results.c
    with engine.connect() as conn:
        rows = conn.execute(select(run_results).where(c.run_id == run_id).order_by(c.item_index)).mappings().all()
    return [dict(r) for r in rows]


def finish_run(engine: Engine, run_id: uuid.UUID, values: dict[str, Any]) -> None:
    """Record the outcome and release the run (the caller computed counters with ``result_counters``)."""
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(update(analysis_runs).where(analysis_runs.c.id == run_id).values(**values, runner=None, heartbeat_at=now, updated_at=now))


def list_runs(engine: Engine | None) -> list[dict[str, Any]]:
    if engine is None:
        return []
    r = analysis_runs.c
    with engine.connect() as conn:
        rows = conn.execute(select(analysis_runs).where(r.name.is_not(None)).order_by(r.created_at, r.name)).mappings().all()
    return [dict(row) for row in rows]
