"""``trigger: on_apply``: the runs an apply created or changed start once that apply has committed.

`apply` and `watch` both start them here, so they behave alike: a run starts only while it is still
pending (the claim is a compare-and-swap on that status, so no run starts twice, even with two
watchers), it reads the configuration the apply just committed, and whatever goes wrong comes back
as a value to report, never as an exception that would end a watch loop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from reconciler.errors import Problem, ReconcilerError, RunAlreadyStarted, first_line

if TYPE_CHECKING:
    from reconciler.runs.experiment import ExperimentSummary
    from reconciler.runs.runner import ItemOutcome
    from reconciler.runs.service import RunSummary


@dataclass(frozen=True)
class TriggeredRun:
    """How starting one on_apply run went."""

    name: str
    status: str  # the run's status afterwards: completed | partial | failed | interrupted | pending (did not start) | ...
    summary: RunSummary | ExperimentSummary | None = None  # set when it ran
    skipped: str = ""  # why it was not started: it had been started already
    problems: tuple[Problem, ...] = ()  # why it could not start, or broke down

    @property
    def failed(self) -> bool:
        return bool(self.problems) or self.status in ("failed", "interrupted")


EXPERIMENT_PREFIX = "experiment/"  # how apply names the on_apply experiments it starts


def next_step(name: str, status: str) -> str:
    """The hint that goes with a run (or ``experiment/NAME``) that did not complete."""
    if name.startswith(EXPERIMENT_PREFIX):
        shown = name.removeprefix(EXPERIMENT_PREFIX)
        if status == "pending":
            return f"fix the cause, then start it with `reconciler run {name}`"
        return f"`reconciler experiments show {shown}` shows it; `reconciler run {name}`" + (
            " --retry-failed redoes the failed answers" if status == "partial" else " resumes it"
        )
    if status == "partial":
        return f"`reconciler runs results {name}` shows why items failed; `reconciler run {name} --retry-failed` redoes them"
    if status == "pending":
        return f"fix the cause, then start it with `reconciler run {name}`"
    return f"`reconciler runs show {name}` shows the run; fix the cause, then `reconciler run {name}` resumes it"


def start_triggered_run(
    engine: Engine,
    name: str,
    *,
    on_start: Callable[[int, int], None] | None = None,
    on_item: Callable[[ItemOutcome], None] | None = None,
    halt: threading.Event | None = None,
) -> TriggeredRun:
    """Start the pending run ``name`` (or experiment, as ``experiment/NAME``) and run it to its end
    (or until ``halt`` is set)."""
    from reconciler.runs.service import RunOptions, execute_run

    try:
        if name.startswith(EXPERIMENT_PREFIX):
            from reconciler.runs.experiment import execute_experiment

            summary: Any = execute_experiment(
                engine,
                name.removeprefix(EXPERIMENT_PREFIX),
                RunOptions(only_pending=True),
                on_item=(lambda agent, o: on_item(o)) if on_item is not None else None,
                on_start=on_start,
                halt=halt,
            )
        else:
            summary = execute_run(engine, name, RunOptions(only_pending=True), on_item=on_item, on_start=on_start, halt=halt)
    except RunAlreadyStarted as exc:
        return TriggeredRun(name, exc.status, skipped=exc.problems[0].message)
    except ReconcilerError as exc:  # refused before it was claimed: it is still pending
        return TriggeredRun(name, "pending", problems=tuple(exc.problems))
    except Exception as exc:  # noqa: BLE001 - a bug or a database failure mid-run: report it, keep the caller alive
        status = _status_of(engine, name)
        problem = Problem(f"run {name!r} broke down: {type(exc).__name__}: {first_line(exc)}", hint=next_step(name, status))
        return TriggeredRun(name, status, problems=(problem,))
    return TriggeredRun(name, summary.status, summary=summary)


def _status_of(engine: Engine, name: str) -> str:
    from reconciler.runs.experiment_store import get_experiment
    from reconciler.runs.store import find_run

    try:
        if name.startswith(EXPERIMENT_PREFIX):
            return get_experiment(engine, name.removeprefix(EXPERIMENT_PREFIX)).status
        return find_run(engine, name).status
    except Exception:  # noqa: BLE001 - the database may be what failed
        return "unknown"
