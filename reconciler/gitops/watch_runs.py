"""Runs with ``trigger: on_apply`` under `watch`: each starts in a thread of its own once its apply has
committed, so an hour-long run never keeps the loop from applying the next change. Starting goes
through ``runs.triggered``, as for `apply`; how each run went comes back as a ``RunEvent``.

This module imports nothing from ``runs`` until a run starts, so a watch without runs never loads
pydantic-ai.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from reconciler.errors import Problem, Severity, first_line

if TYPE_CHECKING:
    from reconciler.runs.triggered import TriggeredRun

CLAIM_TIMEOUT = 60.0  # longest wait for a run to claim its configuration before the loop goes on
RUN_STOP_GRACE = 10.0  # how long a stopping watch lets runs finish the items they are working on

#: Where a run watch started is: it claimed its configuration and works (``started``); it ended, or
#: broke down after starting (``finished``); it was not due (``skipped``); it could not start and
#: stays pending (``not-started``); watch stopped while it still worked (``interrupted``).
RunPhase = Literal["started", "finished", "skipped", "not-started", "interrupted"]


@dataclass(frozen=True)
class RunEvent:
    """A run watch started: once it has claimed its configuration, and once it has ended."""

    run: str
    phase: RunPhase
    status: str  # the run's status in the database afterwards (pending if it could not start)
    apply_id: int | None
    message: str
    summary: dict[str, Any] | None = None
    errors: tuple[Problem, ...] = ()
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))

    @property
    def failed(self) -> bool:
        return any(p.severity == "error" for p in self.errors)

    quiet = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": "run",
            "time": self.time,
            "trigger": "on_apply",
            "run": self.run,
            "phase": self.phase,
            "status": self.status,
            "apply_id": self.apply_id,
            "message": self.message,
            "summary": self.summary,
            "errors": [p.to_dict() for p in self.errors],
        }

    def render_text(self) -> str:
        origin = f"apply #{self.apply_id}" if self.apply_id is not None else "on_apply"
        lines = [f"[{self.time[11:19]}] run {self.run} ({origin}): {self.message}"]
        lines += ["    " + line for p in self.errors for line in p.render().splitlines()]
        return "\n".join(lines)


def outcome_event(outcome: TriggeredRun, apply_id: int | None) -> RunEvent:
    """The event for a run that has ended, was skipped, or could not start; failures carry a hint."""
    from reconciler.runs.triggered import next_step

    name, status = outcome.name, outcome.status
    if outcome.summary is not None:
        s = outcome.summary
        errors: tuple[Problem, ...] = ()
        if s.error:
            severity: Severity = "warning" if status == "partial" else "error"
            errors = (Problem(s.error, hint=next_step(name, status), severity=severity),)
        return RunEvent(name, "finished", status, apply_id, s.describe(), s.to_dict(), errors)
    if outcome.skipped:
        return RunEvent(name, "skipped", status, apply_id, f"not started: {outcome.skipped}")
    problems = tuple(p if p.hint else Problem(p.message, p.location, p.document, p.field, next_step(name, status)) for p in outcome.problems)
    what = "could not start; it stays pending" if status == "pending" else f"broke down; it is {status}"
    return RunEvent(name, "not-started" if status == "pending" else "finished", status, apply_id, what, errors=problems)


class RunStarter:
    """Starts each on_apply run in a thread of its own and reports how it went.

    ``start`` returns once every run has claimed its configuration (or failed to), so the run uses
    the configuration just applied and the next apply cannot change it under the run.
    """

    def __init__(self, db: str | None, emit: Callable[[RunEvent], None], claim_timeout: float = CLAIM_TIMEOUT) -> None:
        self.db = db
        self.claim_timeout = claim_timeout
        self.halt = threading.Event()
        self.threads: list[tuple[str, threading.Thread]] = []
        self._emit = emit
        self._closed = False
        self._guard = threading.Lock()

    def emit(self, event: RunEvent) -> None:
        with self._guard:
            if not self._closed:  # after the watch has said "stopped", a late run says nothing
                self._emit(event)

    def start(self, names: tuple[str, ...], apply_id: int | None) -> None:
        for name in names:
            claimed = threading.Event()
            thread = threading.Thread(target=self._run, args=(name, apply_id, claimed), name=f"run {name}", daemon=True)
            self.threads.append((name, thread))
            thread.start()
            claimed.wait(self.claim_timeout)

    def _run(self, name: str, apply_id: int | None, claimed: threading.Event) -> None:
        def on_start(todo: int, total: int) -> None:
            claimed.set()
            self.emit(RunEvent(name, "started", "running", apply_id, f"started: {todo} of {total} items to do"))

        engine = None
        try:
            from reconciler.runs.triggered import start_triggered_run
            from reconciler.state.db import open_engine

            engine = open_engine(self.db, create=False)
            if engine is None:
                raise RuntimeError("the state database is gone")
            event = outcome_event(start_triggered_run(engine, name, on_start=on_start, halt=self.halt), apply_id)
        except Exception as exc:  # noqa: BLE001 - a run thread must never end without a word
            problem = Problem(f"internal error: {type(exc).__name__}: {first_line(exc)}", hint=f"`reconciler runs show {name}` shows the run")
            event = RunEvent(name, "not-started", "unknown", apply_id, "could not start", errors=(problem,))
        finally:
            claimed.set()
            if engine is not None:
                engine.dispose()
        self.emit(event)

    def wait(self) -> None:
        """Until every run started so far has ended (`watch --once`)."""
        for _, thread in self.threads:
            thread.join()

    def stop(self, grace: float = RUN_STOP_GRACE) -> None:
        """Ask the runs to stop between items, wait ``grace`` seconds, and report those still working."""
        self.halt.set()
        deadline = time.monotonic() + grace
        for _, thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._guard:
            self._closed = True
            left = [name for name, thread in self.threads if thread.is_alive()]
            for name in left:
                problem = Problem(
                    f"watch stopped while run {name!r} was still working on items; it stays 'running' until resumed",
                    hint=f"`reconciler run {name}` resumes it (finished items are kept)",
                    severity="warning",
                )
                self._emit(RunEvent(name, "interrupted", "running", None, "interrupted", errors=(problem,)))
