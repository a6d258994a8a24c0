"""Start or resume an experiment: the same inputs through several agents of one task, one arm per agent.

Each arm has its own config snapshot and SHA-256 (an unnamed analysis run), all arms share one pool
of workers with their items interleaved, and resume is exact as for runs: (arm run, item) is unique
in the database, so a killed experiment redoes nothing that was stored. Arms are created together
with the claim, in one transaction.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Engine

from reconciler.errors import Problem, ReconcilerError
from reconciler.runs import experiment_store as xstore
from reconciler.runs import metrics, store
from reconciler.runs.evaluate import Arm, EvalItem, Evaluation, EvaluationOptions
from reconciler.runs.runner import ItemOutcome
from reconciler.runs.service import (
    RunOptions,
    RunSummary,
    check_expected,
    check_runnable,
    evaluate_and_finish,
    execution_settings,
    model_file_of,
    outcome_error,
    record_outcome,
    refuse_mixed_configuration,
    refuse_to_start,
    with_secret,
    work_items,
)
from reconciler.state.tables import utcnow


@dataclass(frozen=True)
class ExperimentSummary:
    name: str
    status: str
    arms: tuple[RunSummary, ...]
    processed_now: int
    elapsed_seconds: float
    error: str | None

    @property
    def items_failed(self) -> int:
        return sum(a.items_failed for a in self.arms)

    @property
    def items_unfinished(self) -> int:
        return sum(a.items_unfinished for a in self.arms)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "arms": [a.to_dict() for a in self.arms]}

    def describe(self) -> str:
        """One line for people: status, then per arm valid answers and accuracy, and the time."""
        arms = "; ".join(
            f"{a.name} {a.items_succeeded}/{a.items_total} valid"
            + (f", accuracy {a.accuracy:.0%}" if a.accuracy is not None else "")
            + (f", {a.reused} reused" if a.reused else "")
            for a in self.arms
        )
        return f"{self.status} — {arms}; {self.elapsed_seconds:.1f} s"


def _assignment_problem(name: str, task: str, agent: str) -> Problem:
    slug = f"{agent}-{task}"
    return Problem(
        f"experiment {name!r}: agent {agent!r} is not assigned to task {task!r}",
        hint=(
            "add the assignment and apply:\n"
            f"    apiVersion: reconciler/v1\n    kind: Assignment\n    metadata: {{name: {slug}}}\n    spec: {{agent: {agent}, task: {task}}}"
        ),
    )


@dataclass(frozen=True)
class ArmRun:
    """One arm as its outcome is recorded: its agent, run row, configuration and hash."""

    agent: str
    run_id: uuid.UUID
    config: store.ResolvedConfig
    sha: str


@dataclass(frozen=True)
class PreparedExperiment:
    """An experiment checked and ready to start (locally or on workers): per arm its configuration,
    snapshot and hash, and the items still to do."""

    record: xstore.ExperimentRecord
    agents: list[str]
    assignments: dict[str, uuid.UUID]
    configs: list[store.ResolvedConfig]
    model_files: list[dict[str, Any] | None]
    snapshots: list[dict[str, Any]]
    shas: list[str]
    todo: list[list[EvalItem]]
    per_arm: int

    def starts(self) -> list[xstore.ArmStart]:
        return [xstore.ArmStart(i, a, self.assignments[a], self.snapshots[i], self.shas[i], self.per_arm) for i, a in enumerate(self.agents)]

    def arm_runs(self, run_ids: dict[int, uuid.UUID]) -> list[ArmRun]:
        return [ArmRun(agent, run_ids[i], self.configs[i], self.shas[i]) for i, agent in enumerate(self.agents)]


def prepare_experiment(engine: Engine, record: xstore.ExperimentRecord, retry_failed: bool) -> PreparedExperiment:
    """What a local and a distributed experiment check before they start (its task and every agent's
    assignment exist and are active, the expected field, no arm changed its configuration since it
    stored results), then each arm's snapshot, hash and items still to do."""
    name, spec = record.name, record.spec
    agents: list[str] = list(spec.get("agents") or [])
    task = xstore.task_name(engine, record.task_id)
    if task is None or record.task_id is None:
        raise ReconcilerError(
            f"experiment {name!r}: its task no longer exists", hint="give the experiment an existing task under a new name and apply"
        )
    assignments = xstore.assignments_for(engine, record.task_id, agents)
    missing = [a for a in agents if a not in assignments]
    if missing:
        raise ReconcilerError([_assignment_problem(name, task, a) for a in missing])
    repeats = int(spec.get("repeats", 1))
    per_arm = len(spec.get("inputs") or []) * repeats
    configs = [store.resolve_assignment(engine, assignments[a], f"experiment {name!r}") for a in agents]
    for agent, config in zip(agents, configs, strict=True):
        check_runnable(f"experiment {name!r} (agent {agent!r})", config)
    check_expected(f"experiment {name!r}", spec.get("expected"), configs[0].task)

    model_files = [model_file_of(c.provider) for c in configs]
    snapshots = [metrics.config_snapshot(c.provider, c.agent, c.task, f) for c, f in zip(configs, model_files, strict=True)]
    shas = [metrics.snapshot_sha256(s) for s in snapshots]
    existing = {arm.index: arm for arm in xstore.arms_of(engine, record.id)}
    stored = xstore.finished_indexes(engine, [a.run_id for a in existing.values()], retry_failed=False)
    for index, arm in existing.items():
        refuse_mixed_configuration(
            f"experiment {name!r}: agent {arm.agent!r}",
            arm.config_sha256,
            shas[index],
            bool(stored.get(arm.run_id)),
            f"create a new Experiment (a new metadata.name) for the new configuration; `reconciler experiments show {name}` shows the old one",
        )
    done = xstore.finished_indexes(engine, [a.run_id for a in existing.values()], retry_failed=True) if retry_failed else stored
    todo = [
        work_items(f"experiment {name!r}", spec, done.get(existing[i].run_id, set()) if i in existing else set(), repeats) for i in range(len(agents))
    ]
    return PreparedExperiment(record, agents, assignments, configs, model_files, snapshots, shas, todo, per_arm)


def execute_experiment(
    engine: Engine,
    name: str,
    options: RunOptions | None = None,
    on_item: Callable[[str, ItemOutcome], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
    registry: Any = None,
    halt: threading.Event | None = None,
) -> ExperimentSummary:
    """Run (or resume) experiment ``name`` to the end. ``on_item(agent, outcome)`` follows progress;
    ``on_start(todo, total)`` is called once it is claimed; ``halt`` stops it between items."""
    options = options or RunOptions()
    record = xstore.get_experiment(engine, name)
    refuse_to_start(record, "experiment", name, f"reconciler experiments show {name}", options.only_pending)
    prepared = prepare_experiment(engine, record, options.retry_failed)
    agents, todo = prepared.agents, prepared.todo
    run_ids = xstore.claim_experiment(engine, record, prepared.starts())
    if on_start is not None:
        on_start(sum(len(t) for t in todo), prepared.per_arm * len(agents))
    arms = [
        Arm(agent, c.agent, c.task, with_secret(c.provider, c.api_key_encrypted, engine.url), f)
        for agent, c, f in zip(agents, prepared.configs, prepared.model_files, strict=True)
    ]

    def save(batch: list[ItemOutcome], answers: list[Any]) -> None:
        rows: dict[Any, list[dict[str, Any]]] = {}
        for o in batch:
            rows.setdefault(run_ids[o.arm], []).append(o.row())
        xstore.save_arm_results(engine, record.id, rows, answers)

    def item_done(outcome: ItemOutcome) -> None:
        if on_item is not None:
            on_item(agents[outcome.arm], outcome)

    concurrency = options.concurrency or int(record.spec.get("concurrency", 4))
    return evaluate_and_finish(
        engine,
        arms,
        todo,
        EvaluationOptions(concurrency, execution_settings(record.spec), options.use_cache, options.max_consecutive_failures),
        save=save,
        finish=lambda elapsed, stopped, evaluation: finish_experiment(
            engine, record, prepared.arm_runs(run_ids), prepared.per_arm, elapsed, stopped, evaluation
        ),
        provider_down=lambda reason: f"a provider looks down: {reason}",
        registry=registry,
        on_item=item_done,
        halt=halt,
    )


def finish_experiment(
    engine: Engine,
    record: xstore.ExperimentRecord,
    arms: Sequence[ArmRun],
    per_arm: int,
    elapsed: float,
    stopped: str | None,
    evaluation: Evaluation,
) -> ExperimentSummary:
    """Record an experiment's outcome (each arm's, then its own) and release it, whoever executed it
    (this process, or the workers of a distributed experiment). Every arm ends with the experiment's
    reason to stop: the arms share one pool and one outage breaker."""
    elapsed_total = (record.elapsed_seconds or 0.0) + elapsed
    summaries = tuple(
        record_outcome(
            engine,
            arm.run_id,
            name=arm.agent,
            total=per_arm,
            expected=record.spec.get("expected"),
            config=arm.config,
            sha=arm.sha,
            elapsed_total=elapsed_total,
            stopped=stopped,
            outcome=Evaluation(),
            resume=f"reconciler run {record.name}",
            results=f"reconciler experiments show {record.name}",
        )
        for arm in arms
    )
    total = per_arm * len(arms)
    ok = sum(s.items_succeeded for s in summaries)
    failed = sum(s.items_failed for s in summaries)
    status = metrics.final_status(total, ok, failed)
    resume, results = f"reconciler run {record.name}", f"reconciler experiments show {record.name}"
    error = outcome_error(total, ok, failed, stopped, evaluation, resume, results, unit="answer", unanswered="not given")
    xstore.finish_experiment(
        engine,
        record.id,
        {"status": status, "error": error, "completed_at": None if stopped is not None else utcnow(), "elapsed_seconds": elapsed_total},
    )
    return ExperimentSummary(record.name, status, summaries, evaluation.processed + evaluation.reused, elapsed_total, error)
