"""Read-only views of experiments for the CLI: the list, and one experiment's report."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from reconciler.runs import experiment_store as xstore
from reconciler.runs import metrics
from reconciler.runs.experiment_report import ArmData, ExperimentReport, build_report
from reconciler.runs.views import current_status, iso


def status_of(record: xstore.ExperimentRecord) -> tuple[str, str | None]:
    """(status, error) as they are now: one left ``running`` by a process that is gone is interrupted."""
    return current_status(record, record.error, "answers")


def experiment_rows(engine: Engine | None) -> list[dict[str, Any]]:
    rows = []
    for record in xstore.list_experiments(engine):
        status, error = status_of(record)
        spec = record.spec
        rows.append(
            {
                "name": record.name,
                "status": status,
                "task": spec.get("task"),
                "agents": ", ".join(spec.get("agents") or []),
                "inputs": len(spec.get("inputs") or []),
                "repeats": spec.get("repeats", 1),
                "elapsed_s": round(record.elapsed_seconds, 1) if record.elapsed_seconds is not None else None,
                "started_at": iso(record.started_at),
                "completed_at": iso(record.completed_at),
                "error": error,
            }
        )
    return rows


def _cost(snapshot: dict[str, Any] | None, input_tokens: int, output_tokens: int) -> float:
    if not snapshot:
        return 0.0
    agent = snapshot.get("agent") or {}
    provider_type = (snapshot.get("provider") or {}).get("type", "")
    return metrics.estimate_cost(provider_type, agent.get("model_name", ""), agent.get("prices"), input_tokens, output_tokens)


def experiment_distribution(engine: Engine, name: str) -> dict[str, Any]:
    """A distributed experiment's chunks over every arm and its workers (host, pid, answers stored);
    nothing for one that never was."""
    from reconciler.runs.views import distribution_view

    record = xstore.get_experiment(engine, name)
    return distribution_view(engine, [arm.run_id for arm in xstore.arms_of(engine, record.id)])


def experiment_report(engine: Engine, name: str) -> ExperimentReport:
    record = xstore.get_experiment(engine, name)
    spec = record.spec
    agents = list(spec.get("agents") or [])
    arms = {arm.agent: arm for arm in xstore.arms_of(engine, record.id)}
    run_ids = [arm.run_id for arm in arms.values()]
    results = xstore.arm_results(engine, run_ids)
    counters = xstore.arm_counters(engine, run_ids)
    data = []
    for agent in agents:
        arm = arms.get(agent)
        if arm is None:  # not started yet
            data.append(ArmData(agent, None, [], 0, 0, 0.0))
            continue
        c = counters.get(arm.run_id, {})
        inp, out = int(c.get("input_tokens") or 0), int(c.get("output_tokens") or 0)
        # a finished arm stored its cost; a running one is priced now (genai-prices costs a tenth of a second to load)
        cost = arm.cost_estimate if arm.status not in {"running", "pending"} else _cost(arm.config_snapshot, inp, out)
        data.append(ArmData(agent, arm.config_sha256, results[arm.run_id], inp, out, cost))
    status, error = status_of(record)
    return build_report(
        name=record.name,
        status=status,
        task=spec.get("task") or xstore.task_name(engine, record.task_id),
        baseline=spec.get("baseline") or (agents[0] if agents else ""),
        arms=data,
        inputs=spec.get("inputs") or [],
        expected=spec.get("expected"),
        repeats=int(spec.get("repeats", 1)),
        error=error,
        prompt_template=spec.get("prompt_template"),
    )
