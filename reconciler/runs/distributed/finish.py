"""Finishing a distributed run once its chunks are closed, as a local run finishes (same status,
counters, accuracy, cost and error), and following one until then (``run --distribute --wait``).
No task engine here: the worker, ``--wait`` and ``--distribute`` all call it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from reconciler.llm.ports import AgentConfig, ProviderConfig, TaskConfig
from reconciler.runs import service, store
from reconciler.runs.distributed import store as dstore
from reconciler.runs.evaluate import Evaluation
from reconciler.runs.service import RunSummary
from reconciler.runs.store import DISTRIBUTED_RUNNER, ResolvedConfig, RunRecord
from reconciler.state.tables import utcnow


def config_of_snapshot(record: RunRecord, snapshot: dict[str, Any]) -> ResolvedConfig:
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


def finish_run(engine: Engine, run_id: uuid.UUID) -> RunSummary | None:
    """Record the outcome of a distributed run whose chunks are all closed and release it; None when
    it is not (or no longer) one to finish. Under the run's lock: whoever calls it first finishes it,
    once."""
    with dstore.run_lock(engine, run_id):
        record = dstore.find_run_by_id(engine, run_id)
        if record.status != "running" or record.runner != DISTRIBUTED_RUNNER:
            return None
        shown = dstore.distribution(engine, run_id)
        if shown is not None and shown.open:
            return None
        snapshot = dstore.run_row(engine, run_id)["config_snapshot"] or {}
        elapsed = (utcnow() - shown.enqueued_at).total_seconds() if shown is not None and shown.enqueued_at else 0.0
        outcome = Evaluation(processed=shown.stored_since if shown else 0)
        if shown is not None and shown.last_transient_error is not None and shown.stopped_reason is None:
            counters = store.result_counters(engine, run_id)
            total = len(record.spec.get("inputs") or [])
            outcome.unanswered = total - counters["items_succeeded"] - counters["items_failed"]
            outcome.last_transient_error = shown.last_transient_error
        return service.finish(
            engine,
            record,
            config_of_snapshot(record, snapshot),
            record.config_sha256 or "",
            elapsed,
            shown.stopped_reason if shown else None,
            outcome,
        )


def summary_of(engine: Engine, name: str) -> RunSummary:
    """A run's summary from its row, as ``reconciler run`` prints it at the end."""
    row = dstore.run_row(engine, store.find_run(engine, name).id)
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


Progress = Callable[[int, int, dstore.Distribution], None]  # (finished items, total, where the chunks are)


def follow(engine: Engine, name: str, on_progress: Progress | None = None, poll_seconds: float = 1.0) -> RunSummary:
    """Wait until the distributed run ``name`` is finished, reporting progress; its summary."""
    while True:
        record = store.find_run(engine, name)
        if record.status != "running" or record.runner != DISTRIBUTED_RUNNER:
            return summary_of(engine, name)
        shown = dstore.distribution(engine, record.id)
        if shown is not None and on_progress is not None:
            counters = store.result_counters(engine, record.id)
            total = len(record.spec.get("inputs") or [])
            on_progress(counters["items_succeeded"] + counters["items_failed"], total, shown)
        if shown is None or not shown.open:
            finish_run(engine, record.id)  # its last worker died before finishing it
            continue
        time.sleep(poll_seconds)
