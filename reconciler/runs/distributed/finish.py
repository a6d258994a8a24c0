"""Finishing a distributed run once its chunks are closed, as a local run finishes (same status,
counters, accuracy, cost and error), and following one until then (``run --distribute --wait``).
No task engine here: the worker, ``--wait`` and ``--distribute`` all call it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

from sqlalchemy import Engine

from reconciler.llm.ports import AgentConfig, ProviderConfig, TaskConfig
from reconciler.runs import experiment, service, store
from reconciler.runs import experiment_store as xstore
from reconciler.runs.distributed import store as dstore
from reconciler.runs.evaluate import Evaluation
from reconciler.runs.experiment import ArmRun, ExperimentSummary
from reconciler.runs.service import RunSummary
from reconciler.runs.store import DISTRIBUTED_RUNNER, ResolvedConfig
from reconciler.state.tables import utcnow


def config_of_snapshot(snapshot: dict[str, Any]) -> ResolvedConfig:
    """The configuration a run used, from its snapshot: its cost is priced on what answered, not on
    what the database holds now."""
    p, a, t = snapshot.get("provider") or {}, snapshot.get("agent") or {}, snapshot.get("task") or {}
    return ResolvedConfig(
        assignment="",
        agent=AgentConfig(
            name=a.get("name", ""),
            model_name=a.get("model_name", ""),
            system_prompt=a.get("system_prompt", ""),
            temperature=a.get("temperature"),
            max_tokens=a.get("max_tokens"),
            prices=a.get("prices"),
            examples=AgentConfig.examples_from(a.get("examples")),
        ),
        task=TaskConfig(name=t.get("name", ""), response_schema=t.get("response_schema") or {}),
        provider=ProviderConfig(name=p.get("name", ""), type=p.get("type", ""), base_url=p.get("base_url"), model_path=p.get("model_path")),
        api_key_encrypted=None,
        inactive=(),
        validation_status="",
        validation_error=None,
    )


def _outcome(shown: dstore.Distribution | None, total: int, finished: int) -> Evaluation:
    """What the workers did, as a local evaluation reports it: results stored since it was
    distributed, and items left with only transient errors (a done chunk says which was the last)."""
    outcome = Evaluation(processed=shown.stored_since if shown else 0)
    if shown is not None and shown.last_transient_error is not None and shown.stopped_reason is None:
        outcome.unanswered = total - finished
        outcome.last_transient_error = shown.last_transient_error
    return outcome


def _elapsed(shown: dstore.Distribution | None) -> float:
    return (utcnow() - shown.enqueued_at).total_seconds() if shown is not None and shown.enqueued_at else 0.0


def finish_run(engine: Engine, run_id: uuid.UUID) -> RunSummary | ExperimentSummary | None:
    """Record the outcome of a distributed run whose chunks are all closed and release it (for an
    experiment's arm: the experiment, once every arm's chunks are closed); None when it is not (or no
    longer) one to finish. Under the run's lock: whoever calls it first finishes it, once."""
    with engine.connect() as conn:
        link = dstore.arm_of(conn, run_id)
    if link is not None:
        return finish_experiment(engine, link.experiment_id)
    with dstore.run_lock(engine, run_id):
        record = dstore.find_run_by_id(engine, run_id)
        if record.status != "running" or record.runner != DISTRIBUTED_RUNNER:
            return None
        shown = dstore.distribution(engine, run_id)
        if shown is not None and shown.open:
            return None
        snapshot = dstore.run_row(engine, run_id)["config_snapshot"] or {}
        counters = store.result_counters(engine, run_id)
        outcome = _outcome(shown, len(record.spec.get("inputs") or []), counters["items_succeeded"] + counters["items_failed"])
        stopped = shown.stopped_reason if shown else None
        return service.finish(engine, record, config_of_snapshot(snapshot), record.config_sha256 or "", _elapsed(shown), stopped, outcome)


def finish_experiment(engine: Engine, experiment_id: uuid.UUID) -> ExperimentSummary | None:
    """Record the outcome of a distributed experiment whose arms' chunks are all closed, every arm's
    and its own, exactly as a local experiment records them; None when it is not one to finish.
    Under the experiment's lock (the one distributing it holds): it is finished once."""
    with dstore.run_lock(engine, experiment_id):
        record = xstore.experiment_by_id(engine, experiment_id)
        if record.status != "running" or record.runner != DISTRIBUTED_RUNNER:
            return None
        arms = xstore.arms_of(engine, experiment_id)
        shown = dstore.distribution(engine, [arm.run_id for arm in arms])
        if shown is not None and shown.open:
            return None
        per_arm = len(record.spec.get("inputs") or []) * int(record.spec.get("repeats", 1))
        counters = [store.result_counters(engine, arm.run_id) for arm in arms]
        finished = sum(c["items_succeeded"] + c["items_failed"] for c in counters)
        runs = [ArmRun(arm.agent, arm.run_id, config_of_snapshot(arm.config_snapshot or {}), arm.config_sha256 or "") for arm in arms]
        stopped = shown.stopped_reason if shown else None
        return experiment.finish_experiment(engine, record, runs, per_arm, _elapsed(shown), stopped, _outcome(shown, per_arm * len(arms), finished))


def summary_of(engine: Engine, name: str) -> RunSummary:
    """A run's summary from its row, as ``reconciler run`` prints it at the end."""
    return _summary_of_row(engine, store.find_run(engine, name).id, name)


def _summary_of_row(engine: Engine, run_id: uuid.UUID, name: str) -> RunSummary:
    row = dstore.run_row(engine, run_id)
    total, ok, failed = row["items_total"] or 0, row["items_succeeded"] or 0, row["items_failed"] or 0
    shown = dstore.distribution(engine, row["id"])
    return RunSummary(
        name=name,
        status=row["status"],
        items_total=total,
        items_succeeded=ok,
        items_failed=failed,
        items_unfinished=total - ok - failed,
        processed_now=shown.stored_since if shown else 0,
        accuracy=row["accuracy"],
        input_tokens=row["input_tokens"] or 0,
        output_tokens=row["output_tokens"] or 0,
        cost_estimate=row["cost_estimate"] or 0.0,
        elapsed_seconds=row["elapsed_seconds"] or 0.0,
        config_sha256=row["config_sha256"] or "",
        error=row["error"],
        reused=store.reused_count(engine, row["id"]),
    )


def experiment_summary_of(engine: Engine, name: str) -> ExperimentSummary:
    """An experiment's summary from its rows, as ``reconciler run`` prints it at the end."""
    record = xstore.get_experiment(engine, name)
    arms = xstore.arms_of(engine, record.id)
    shown = dstore.distribution(engine, [arm.run_id for arm in arms])
    summaries = tuple(_summary_of_row(engine, arm.run_id, arm.agent) for arm in arms)
    return ExperimentSummary(record.name, record.status, summaries, shown.stored_since if shown else 0, record.elapsed_seconds or 0.0, record.error)


Progress = Callable[[int, int, dstore.Distribution], None]  # (finished items, total, where the chunks are)


def follow(engine: Engine, name: str, on_progress: Progress | None = None, poll_seconds: float = 1.0) -> RunSummary:
    """Wait until the distributed run ``name`` is finished, reporting progress; its summary."""
    while True:
        record = store.find_run(engine, name)
        if record.status != "running" or record.runner != DISTRIBUTED_RUNNER:
            return summary_of(engine, name)
        total = len(record.spec.get("inputs") or [])
        if _progress(engine, [record.id], total, on_progress, partial(finish_run, engine, record.id)):
            time.sleep(poll_seconds)


def follow_experiment(engine: Engine, name: str, on_progress: Progress | None = None, poll_seconds: float = 1.0) -> ExperimentSummary:
    """Wait until the distributed experiment ``name`` is finished, reporting progress over its arms."""
    while True:
        record = xstore.get_experiment(engine, name)
        if record.status != "running" or record.runner != DISTRIBUTED_RUNNER:
            return experiment_summary_of(engine, name)
        run_ids = [arm.run_id for arm in xstore.arms_of(engine, record.id)]
        total = len(record.spec.get("inputs") or []) * int(record.spec.get("repeats", 1)) * len(run_ids)
        if _progress(engine, run_ids, total, on_progress, partial(finish_experiment, engine, record.id)):
            time.sleep(poll_seconds)


def _progress(engine: Engine, run_ids: list[uuid.UUID], total: int, on_progress: Progress | None, finish: Callable[[], Any]) -> bool:
    """Report progress once; True to wait for more, False after finishing one whose last worker died."""
    shown = dstore.distribution(engine, run_ids)
    if shown is not None and on_progress is not None:
        counters = [store.result_counters(engine, run_id) for run_id in run_ids]
        on_progress(sum(c["items_succeeded"] + c["items_failed"] for c in counters), total, shown)
    if shown is None or not shown.open:
        finish()  # its last worker died before finishing it
        return False
    return True
