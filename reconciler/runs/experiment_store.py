"""Reading and writing experiments and their arms. An arm is an unnamed analysis run linked by
``experiment_arms``, so its results, counters and config snapshot are stored exactly as a run's
(``runs.store`` does that part); this module adds the experiment row and the links."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Text, cast, insert, select, update

from reconciler.errors import ReconcilerError
from reconciler.runs import answer_cache, store
from reconciler.runs.answer_cache import CachedAnswer, CacheKey
from reconciler.runs.experiment_report import StoredAnswer
from reconciler.state import jsoncodec
from reconciler.state.tables import (
    agent_configs,
    agent_task_assignments,
    analysis_runs,
    experiment_arms,
    experiments,
    reconciler_resources,
    run_results,
    task_configs,
    utcnow,
)


@dataclass(frozen=True)
class ExperimentRecord:
    id: uuid.UUID
    name: str
    status: str
    spec: dict[str, Any]
    task_id: uuid.UUID | None
    runner: str | None
    heartbeat_at: datetime | None
    elapsed_seconds: float | None
    error: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None


@dataclass(frozen=True)
class ArmRecord:
    index: int
    agent: str
    run_id: uuid.UUID
    status: str
    config_sha256: str | None
    config_snapshot: dict[str, Any] | None
    cost_estimate: float


@dataclass(frozen=True)
class ArmStart:
    """What claiming writes for one arm: its assignment and the configuration it runs with."""

    index: int
    agent: str
    assignment_id: uuid.UUID
    snapshot: dict[str, Any]
    sha: str
    items_total: int


def experiment_record(row: Any) -> ExperimentRecord:
    return store.record_of(ExperimentRecord, row)


def find_experiment(engine: Engine, name: str) -> ExperimentRecord | None:
    with engine.connect() as conn:
        row = conn.execute(select(experiments).where(experiments.c.name == name)).mappings().first()
    return experiment_record(row) if row is not None else None


def experiment_by_id(engine: Engine, experiment_id: uuid.UUID) -> ExperimentRecord:
    with engine.connect() as conn:
        row = conn.execute(select(experiments).where(experiments.c.id == experiment_id)).mappings().first()
    if row is None:
        raise ReconcilerError(f"experiment {experiment_id} is no longer in the database")
    return experiment_record(row)


def get_experiment(engine: Engine, name: str) -> ExperimentRecord:
    record = find_experiment(engine, name)
    if record is None:
        raise ReconcilerError(
            f"no experiment named {name!r} in the database",
            hint="apply an Experiment manifest first (reconciler apply PATH); `reconciler experiments list` shows the ones there are",
        )
    return record


def list_experiments(engine: Engine | None) -> list[ExperimentRecord]:
    if engine is None:
        return []
    e = experiments.c
    with engine.connect() as conn:
        rows = conn.execute(select(experiments).order_by(e.created_at, e.name)).mappings().all()
    return [experiment_record(r) for r in rows]


def arms_of(engine: Engine, experiment_id: uuid.UUID) -> list[ArmRecord]:
    a, r = experiment_arms.c, analysis_runs.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(a.arm_index, a.agent_name, a.run_id, r.status, r.config_sha256, r.config_snapshot, r.cost_estimate)
            .select_from(experiment_arms.join(analysis_runs, analysis_runs.c.id == a.run_id))
            .where(a.experiment_id == experiment_id)
            .order_by(a.arm_index)
        ).all()
    return [ArmRecord(x.arm_index, x.agent_name, x.run_id, x.status, x.config_sha256, x.config_snapshot, x.cost_estimate or 0.0) for x in rows]


def task_name(engine: Engine, task_id: uuid.UUID | None) -> str | None:
    if task_id is None:
        return None
    m = reconciler_resources.c
    with engine.connect() as conn:
        managed = conn.execute(select(m.name).where(m.kind == "Task", m.row_id == task_id)).scalar()
        return managed or conn.execute(select(task_configs.c.name).where(task_configs.c.id == task_id)).scalar()


def assignments_for(engine: Engine, task_id: uuid.UUID, agents: Sequence[str]) -> dict[str, uuid.UUID]:
    """The assignment of each of ``agents`` (by name) to the task, for those that have one."""
    s, a = agent_task_assignments.c, agent_configs.c
    with engine.connect() as conn:
        rows = conn.execute(
            select(a.name, s.id)
            .select_from(agent_task_assignments.join(agent_configs, agent_configs.c.id == s.agent_id))
            .where(s.task_id == task_id, a.name.in_(list(agents)))
        ).all()
    return {row[0]: row[1] for row in rows}


def claim_experiment(engine: Engine, record: ExperimentRecord, arms: Sequence[ArmStart]) -> dict[int, uuid.UUID]:
    """Mark the experiment running under this process (compare-and-swap on status and runner) and
    create or claim its arm runs, in one transaction: a kill leaves either nothing or all of it.
    Returns each arm's run id."""
    with engine.begin() as conn:
        return claim_experiment_on(conn, record, arms)


def claim_experiment_on(conn: Connection, record: ExperimentRecord, arms: Sequence[ArmStart], distributed: bool = False) -> dict[int, uuid.UUID]:
    """``claim_experiment`` in the caller's transaction; ``distributed``: the experiment and its arms
    are held by the task queue (``store.DISTRIBUTED_RUNNER``) until its last chunk is closed."""
    r = analysis_runs.c
    now = utcnow()
    values = store.claim_values(record.status, store.DISTRIBUTED_RUNNER if distributed else store.runner_identity(), now)
    store.compare_and_claim(conn, experiments, record, values, "experiment", f"reconciler experiments show {record.name}")
    existing = {
        row.arm_index: row.run_id
        for row in conn.execute(select(experiment_arms.c.arm_index, experiment_arms.c.run_id).where(experiment_arms.c.experiment_id == record.id))
    }
    run_ids: dict[int, uuid.UUID] = {}
    for arm in arms:
        common = {
            "status": "running",
            "config_snapshot": arm.snapshot,
            "config_sha256": arm.sha,
            "error": None,
            "completed_at": None,
            "heartbeat_at": now,
            "updated_at": now,
            "agent_assignment_id": arm.assignment_id,
            "items_total": arm.items_total,
            "runner": store.DISTRIBUTED_RUNNER if distributed else None,
        }
        if arm.index in existing:
            run_ids[arm.index] = existing[arm.index]
            conn.execute(update(analysis_runs).where(r.id == existing[arm.index]).values(**common))
            continue
        run_id = uuid.uuid4()
        spec = {"experiment": record.name, "agent": arm.agent, "expected": record.spec.get("expected"), "repeats": record.spec.get("repeats", 1)}
        conn.execute(insert(analysis_runs).values(id=run_id, name=None, spec=spec, started_at=now, created_at=now, **common))
        conn.execute(insert(experiment_arms).values(experiment_id=record.id, arm_index=arm.index, agent_name=arm.agent, run_id=run_id))
        run_ids[arm.index] = run_id
    return run_ids


def finished_indexes(engine: Engine, run_ids: Sequence[uuid.UUID], *, retry_failed: bool) -> dict[uuid.UUID, set[int]]:
    c = run_results.c
    query = select(c.run_id, c.item_index).where(c.run_id.in_(list(run_ids)))
    if retry_failed:
        query = query.where(c.valid.is_(True))
    out: dict[uuid.UUID, set[int]] = {run_id: set() for run_id in run_ids}
    with engine.connect() as conn:
        for row in conn.execute(query):
            out[row.run_id].add(row.item_index)
    return out


def save_arm_results(
    engine: Engine,
    experiment_id: uuid.UUID,
    rows_by_run: dict[uuid.UUID, list[dict[str, Any]]],
    answers: Sequence[tuple[CacheKey, CachedAnswer]] = (),
) -> None:
    """Store finished items of any arms, new cache entries and the heartbeat in one transaction."""
    now = utcnow()
    with engine.begin() as conn:
        for run_id, rows in rows_by_run.items():
            if rows:
                store.replace_results(conn, run_id, rows, now)
                store.refresh_counters(conn, run_id, now)
        answer_cache.insert_answers(conn, answers)
        conn.execute(update(experiments).where(experiments.c.id == experiment_id).values(heartbeat_at=now))


def finish_experiment(engine: Engine, experiment_id: uuid.UUID, values: dict[str, Any]) -> None:
    """Record the outcome and release the experiment (its arms were finished one by one before)."""
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(update(experiments).where(experiments.c.id == experiment_id).values(**values, runner=None, heartbeat_at=now, updated_at=now))


def arm_results(engine: Engine, run_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[StoredAnswer]]:
    """What the report reads of each arm's results (one query for every arm; the inputs are the
    experiment's, not read again per answer). Outputs are read as text and decoded here: the JSON
    type's per-row processing cost more than the query."""
    c = run_results.c
    out: dict[uuid.UUID, list[StoredAnswer]] = {run_id: [] for run_id in run_ids}
    with engine.connect() as conn:
        query = select(c.run_id, c.item_index, cast(c.output, Text), c.valid, c.latency_ms, c.reused, c.error).where(c.run_id.in_(list(run_ids)))
        for run_id, index, output, valid, latency, reused, error in conn.execute(query).all():
            value = jsoncodec.loads(output) if output is not None else None
            out[run_id].append(StoredAnswer(index, value, bool(valid), latency, bool(reused), error))
    return out


def arm_counters(engine: Engine, run_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    r = analysis_runs.c
    with engine.connect() as conn:
        rows = (
            conn.execute(
                select(r.id, r.items_total, r.items_succeeded, r.items_failed, r.input_tokens, r.output_tokens, r.cost_estimate, r.accuracy).where(
                    r.id.in_(list(run_ids))
                )
            )
            .mappings()
            .all()
        )
    return {row["id"]: dict(row) for row in rows}
