"""The GitOps loop: reconcile on manifest changes, check for drift on an interval, never die on bad input.

One ``ReconcileEvent`` comes out of every reconcile or check that has something new to say. A failed
reconcile is retried with exponential backoff; invalid manifests wait for their content to change.
Runs with ``trigger: on_apply`` start in the background (``watch_runs``). The loop stops between
transactions: a stop request (SIGINT/SIGTERM set ``stop``) is honoured after the current apply commits.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import Engine, select

from reconciler.errors import (
    GatesFailed,
    LockTimeout,
    Problem,
    ReconcilerError,
    StalePlan,
    StateError,
    first_line,
)
from reconciler.gitops.drift import Drift, detect_drift
from reconciler.gitops.watch_runs import RunEvent, RunStarter
from reconciler.plan.guards import GuardOptions
from reconciler.plan.model import Plan
from reconciler.plan.render import render_change

if TYPE_CHECKING:
    from reconciler.manifests.loader import ParsedFiles
    from reconciler.plan.desired import DesiredMemo
    from reconciler.plan.evaluate import EvaluateOptions
    from reconciler.providers.model_check import ModelCheck
    from reconciler.state.kept import KeptSnapshot
    from reconciler.state.snapshot import StateSnapshot

TRANSIENT = (StateError, LockTimeout, StalePlan)  # may go away by itself: every failed retry is reported
MISSED_SCAN_SECONDS = 5.0  # at most this long between looks for changes no notification told about

#: What set off a reconcile or check: the first one, changed files, the drift-check interval, a retry
#: after a failure, drift to heal (``--self-heal``), or the loop stopping. Printed as is in ``--json``.
Trigger = Literal["startup", "files", "interval", "retry", "self-heal", "takeover", "stop"]
#: What it came to. Printed as is in ``--json``.
Outcome = Literal["applied", "in-sync", "drift", "invalid", "gated", "error", "deferred", "standby", "stopped"]


@dataclass(frozen=True)
class Backoff:
    """How long to wait before retrying a failed reconcile: doubling from ``initial`` up to ``cap``,
    and up to ``jitter`` shorter at random, so watchers sharing a database do not retry in step."""

    initial: float = 5.0
    cap: float = 300.0
    jitter: float = 0.2

    def delay(self, failures: int, rand: float) -> float:
        """Seconds after the ``failures``-th failure in a row; ``rand`` is uniform in [0, 1)."""
        doubled = self.initial * 2.0 ** min(max(failures, 1) - 1, 32)
        return min(self.cap, doubled) * (1.0 - self.jitter * rand)


@dataclass(frozen=True)
class WatchConfig:
    paths: tuple[str, ...]
    db: str | None = None
    interval: float = 60.0
    self_heal: bool = False
    debounce_ms: int = 1600
    lock_timeout: float = 10.0
    allow_mass_delete: bool = False
    validate_providers: bool = True  # probe created/changed providers after each apply, as `apply` does
    validation_timeout: float = 10.0
    retry_initial: float = 5.0  # seconds before the first retry of a failed reconcile
    retry_max: float = 300.0  # the longest wait between retries
    evaluate: EvaluateOptions | None = None  # --evaluate: a change that fails a gate is not applied ("gated")

    @property
    def backoff(self) -> Backoff:
        return Backoff(self.retry_initial, max(self.retry_max, self.retry_initial))


@dataclass(frozen=True)
class ReconcileEvent:
    """What one reconcile or drift check did: JSON-lines friendly, and printable for people."""

    trigger: Trigger
    outcome: Outcome
    duration_ms: float
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))
    apply_id: int | None = None
    summary: dict[str, int] = field(default_factory=dict)
    changes: tuple[str, ...] = ()
    drift: tuple[Drift, ...] = ()
    errors: tuple[Problem, ...] = ()
    provider_status: tuple[dict[str, Any], ...] = ()
    files: tuple[str, ...] = ()
    git: dict[str, Any] | None = None
    retry_in: float | None = None  # seconds until the failed reconcile is retried (None: on the next change)
    runs: tuple[str, ...] = ()  # runs with trigger: on_apply this apply created or changed: they start now
    leader: str | None = None  # standby: the watcher that leads
    missing_models: tuple[dict[str, Any], ...] = ()  # active agents whose model their provider does not serve

    @property
    def failed(self) -> bool:
        return self.outcome in {"invalid", "gated", "error"}

    @property
    def quiet(self) -> bool:
        """Nothing a person needs to see (JSON output still has it)."""
        return self.trigger == "interval" and self.outcome == "in-sync" and not self.provider_status

    def to_dict(self) -> dict[str, Any]:
        return {
            "event": "reconcile",
            "time": self.time,
            "trigger": self.trigger,
            "outcome": self.outcome,
            "duration_ms": round(self.duration_ms, 1),
            "apply_id": self.apply_id,
            "summary": self.summary,
            "changes": list(self.changes),
            "drift": [d.to_dict() for d in self.drift],
            "errors": [p.to_dict() for p in self.errors],
            "provider_status": list(self.provider_status),
            "files": list(self.files),
            "git": self.git,
            "retry_in_s": None if self.retry_in is None else round(self.retry_in, 1),
            "runs": list(self.runs),
            "leader": self.leader,
            "missing_models": list(self.missing_models),
        }

    def render_text(self) -> str:
        clock = self.time[11:19]
        head = f"[{clock}] {self.trigger}"
        if self.files:
            head += f" ({len(self.files)} file{'s' if len(self.files) != 1 else ''} changed)"
        what = (
            self._failure()
            if self.outcome == "error"
            else {
                "applied": f"applied #{self.apply_id}: " + ", ".join(f"{n} {a}d" for a, n in self.summary.items()),
                "in-sync": "in sync",
                "drift": f"drift in {len(self.drift)} resource{'s' if len(self.drift) != 1 else ''} (report only; --self-heal reverts it)",
                "invalid": "manifests are invalid; applied nothing; waiting for them to change",
                "gated": "an evaluated change failed a gate; applied nothing; waiting for the manifests to change",
                "deferred": "a git operation is in progress; reconciling when it ends",
                "standby": f"standby: {self.leader or 'another watcher'} leads; taking over if it stops",
                "stopped": "stopped",
            }[self.outcome]
        )
        lines = [f"{head}: {what} ({self.duration_ms:.0f} ms)"]
        lines += [f"    {c}" for c in self.changes]
        lines += [f"    starting run {name} (trigger: on_apply)" for name in self.runs]
        for d in self.drift:
            fields = ", ".join(f.field for f in d.fields) or "row deleted"
            lines.append(f"    drift: {d.kind.lower()} {d.name}: {fields}")
        for s in self.provider_status:
            lines.append(f"    provider {s['name']}: {s['from'] or 'new'} → {s['to']}" + (f" ({s['error']})" if s.get("error") else ""))
        for m in self.missing_models:
            lines += [f"    warning: {m['message']}", f"      hint: {m['hint']}"]
        errors = self.errors
        if self.outcome == "error" and _inline(errors):  # its message is in the first line already
            lines += [f"      hint: {errors[0].hint}"] if errors[0].hint else []
            errors = ()
        lines += ["    " + line for p in errors for line in p.render().splitlines()]
        return "\n".join(lines)

    def _failure(self) -> str:
        what = "drift check" if self.trigger == "interval" else "apply"
        reason = f": {self.errors[0].message}" if _inline(self.errors) else "; applied nothing"
        when = f"; retrying in {_seconds(self.retry_in)}" if self.retry_in is not None else "; waiting for the next change"
        return f"{what} failed{reason}{when}"


def _missing_model(check: ModelCheck) -> dict[str, Any]:
    """The model check `apply` prints as a warning, as event data: watch has no terminal to warn on."""
    return {**check.to_dict(), "message": check.message(), "hint": check.hint()}


def _inline(errors: tuple[Problem, ...]) -> bool:
    """One problem without a place (a database or lock error): it reads well in the event's first line."""
    return len(errors) == 1 and errors[0].location is None and not errors[0].document


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 1 else f"{value:.0f} s"


Signature = frozenset[tuple[str, int, int]]


def files_signature(paths: tuple[str, ...]) -> Signature:
    """(path, mtime, size) of every file under ``paths``: catches a change the file watcher missed
    (made before it started, or on a file system without notifications)."""
    out: set[tuple[str, int, int]] = set()
    for raw in paths:
        root = Path(raw)
        candidates = [root] if root.is_file() else (p for p in root.rglob("*") if not any(part.startswith(".") for part in p.relative_to(root).parts))
        for p in candidates:
            try:
                st = p.stat()
            except OSError:
                continue
            if p.is_file():
                out.add((str(p), st.st_mtime_ns, st.st_size))
    return frozenset(out)


def provider_statuses(engine: Engine) -> dict[str, tuple[str, str | None]]:
    from reconciler.state.tables import llm_providers

    p = llm_providers.c
    with engine.connect() as conn:
        return {r.name: (r.validation_status, r.validation_error) for r in conn.execute(select(p.name, p.validation_status, p.validation_error))}


def status_changes(before: dict[str, tuple[str, str | None]] | None, after: dict[str, tuple[str, str | None]]) -> tuple[dict[str, Any], ...]:
    """Provider validation statuses that moved since the last look (nothing on the first look)."""
    if before is None:
        return ()
    return tuple(
        {"name": name, "from": before[name][0] if name in before else None, "to": status, "error": error}
        for name, (status, error) in sorted(after.items())
        if before.get(name, (None, None))[0] != status
    )


def _change_lines(plan: Plan) -> tuple[str, ...]:
    return tuple(line for c in plan.changes for line in render_change(c)[:1])


def content_digest(signature: Signature) -> str:
    """SHA-256 of the files' names and bytes: saving or touching a file without changing it keeps it."""
    h = hashlib.sha256()
    for path, _, _ in sorted(signature):
        try:
            with open(path, "rb") as f:
                h.update(path.encode(errors="surrogateescape") + b"\0" + hashlib.file_digest(f, "sha256").digest())
        except OSError:
            continue
    return h.hexdigest()


class Watcher:
    """Runs reconciles and drift checks; every public method returns an event (or None when there is
    nothing new to say) and never raises.

    Failures and what follows them:
    - invalid manifests: reported once; not read again until their content changes;
    - a transient failure (database unreachable or locked, an internal error): reported with the
      wait, retried with backoff (and on every change of the manifests);
    - a refused plan (guard rails, conflicts with unmanaged rows, unreadable secrets): reported once
      per distinct content and error, retried with backoff, as the database may be fixed meanwhile.
    """

    def __init__(
        self,
        config: WatchConfig,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.clock, self.rand = clock, rand
        self.engine: Engine | None = None
        self.statuses: dict[str, tuple[str, str | None]] | None = None
        self.signature: Signature = frozenset()
        self.failures = 0  # failed reconciles and checks in a row
        self.retry_at: float | None = None  # when the failed reconcile is retried (clock time)
        self.transient = False  # whether the pending retry is for a transient failure
        self.invalid_digest: str | None = None  # content of the invalid manifests last reported
        self.gated_digest: str | None = None  # content of the manifests whose evaluation last failed a gate
        self.reported: tuple[str | None, tuple[Problem, ...]] | None = None  # the last refusal reported
        self.parsed: ParsedFiles | None = None  # the files read last time, kept in memory
        self.kept: KeptSnapshot | None = None  # the state last read, and the connection it was read on
        self.desired: DesiredMemo | None = None  # the desired resources of the manifests loaded last time
        self._drift_of: tuple[StateSnapshot, tuple[Drift, ...]] | None = None  # the last snapshot's drift

    # -- pieces -------------------------------------------------------------------------------
    def _engine(self) -> Engine:
        if self.engine is None:
            from reconciler.workflow import open_for_apply

            self.engine = open_for_apply(self.config.db)
        return self.engine

    def _kept(self) -> KeptSnapshot:
        if self.kept is None:
            from reconciler.state.kept import KeptSnapshot

            self.kept = KeptSnapshot(self._engine())
        return self.kept

    def _drift(self, snapshot: StateSnapshot) -> tuple[Drift, ...]:
        """The drift of ``snapshot``, found once per snapshot (a kept one serves many changes)."""
        if self._drift_of is None or self._drift_of[0] is not snapshot:
            self._drift_of = (snapshot, tuple(detect_drift(snapshot)))
        return self._drift_of[1]

    def _forget_engine(self) -> None:
        if self.kept is not None:
            self.kept.close()
            self.kept = None
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None

    def _provider_changes(self, engine: Engine) -> tuple[dict[str, Any], ...]:
        from reconciler.state.db import translate_db_errors

        with translate_db_errors(engine.url, "reading provider statuses"):
            now = provider_statuses(engine)
        changes = status_changes(self.statuses, now)
        self.statuses = now
        return changes

    def _failed(self, trigger: Trigger, started: float, exc: BaseException, files: tuple[str, ...], digest: str | None) -> ReconcileEvent | None:
        if isinstance(exc, ReconcilerError):
            problems = tuple(exc.problems)
            transient = isinstance(exc, TRANSIENT)
        else:  # a bug or an unexpected driver error: report it and keep the loop alive
            problems = (Problem(f"internal error: {type(exc).__name__}: {first_line(exc)}", hint="retried with backoff; report it if it persists"),)
            transient = True
        if isinstance(exc, StateError) or not isinstance(exc, ReconcilerError):
            self._forget_engine()
        elif self.kept is not None:
            self.kept.forget()  # read the state again at the retry
        self.failures += 1
        delay = self.config.backoff.delay(self.failures, self.rand())
        self.retry_at, self.transient = self.clock() + delay, transient
        if transient:
            self.reported = None  # a refusal after this is news again
        elif self.reported == (digest, problems):
            return None  # the same refusal of the same manifests: said already
        else:
            self.reported = (digest, problems)
        return ReconcileEvent(trigger, "error", _ms(started), errors=problems, files=files, retry_in=delay)

    def _succeeded(self) -> None:
        self.failures, self.retry_at, self.reported = 0, None, None

    # -- the two operations ---------------------------------------------------------------------
    def reconcile(self, trigger: Trigger, files: tuple[str, ...] = ()) -> ReconcileEvent | None:
        """Validate, plan and apply the manifests; invalid manifests apply nothing."""
        from reconciler.gitinfo import describe_checkout
        from reconciler.manifests.loader import ParsedFiles, load_manifests
        from reconciler.plan.desired import DesiredMemo
        from reconciler.workflow import ApplyRequest, apply_manifests

        started = time.perf_counter()
        paths = list(self.config.paths)
        self.signature = files_signature(self.config.paths)
        digest = content_digest(self.signature)
        if digest in (self.invalid_digest, self.gated_digest):
            return None  # the same invalid or gated manifests as last time: reported already, and still so
        try:
            self.parsed = self.parsed or ParsedFiles()
            self.desired = self.desired or DesiredMemo()
            manifests = load_manifests(paths, parsed=self.parsed)
        except ReconcilerError as exc:
            self.invalid_digest, self.retry_at = digest, None  # only a change can make them valid
            return ReconcileEvent(trigger, "invalid", _ms(started), errors=tuple(exc.problems), files=files)
        self.invalid_digest = None
        try:
            git = describe_checkout(paths)
            engine = self._engine()
            in_transaction = self.config.evaluate is None  # no model is asked while the write transaction is open
            request = ApplyRequest(
                paths,
                self.config.db,
                prune=True,
                git=git,
                guards=GuardOptions(allow_mass_delete=self.config.allow_mass_delete),
                lock_timeout=self.config.lock_timeout,
                command="watch",
                validate_providers=self.config.validate_providers,
                validation_timeout=self.config.validation_timeout,
                start_runs=False,
                engine=engine,
                manifests=manifests,
                # the state is read inside the apply transaction, or reused when nobody wrote since
                plan_in_transaction=in_transaction,
                kept=self._kept() if in_transaction else None,
                desired_memo=self.desired,
                evaluate=self.config.evaluate,
            )
            outcome = apply_manifests(request)  # its on_apply runs start in the background, after this event
            drift = self._drift(outcome.snapshot)
            statuses = self._provider_changes(engine)
        except GatesFailed as exc:  # evaluated again only when the manifests change: the models are not asked twice
            self._succeeded()
            self.gated_digest = digest
            return ReconcileEvent(trigger, "gated", _ms(started), errors=tuple(exc.problems), files=files, git=git)
        except Exception as exc:  # noqa: BLE001 - the loop must outlive any single reconcile
            return self._failed(trigger, started, exc, files, digest)
        self._succeeded()
        self.gated_digest = None
        result, plan = outcome.result, outcome.plan
        if result is None or result.apply_id is None:
            return ReconcileEvent(trigger, "in-sync", _ms(started), drift=drift, provider_status=statuses, files=files, git=git)
        return ReconcileEvent(
            trigger,
            "applied",
            _ms(started),
            apply_id=result.apply_id,
            summary=plan.summary(),
            changes=_change_lines(plan),
            drift=drift,
            errors=outcome.problems,
            provider_status=statuses,
            files=files,
            git=git,
            runs=result.runs_to_start,
            missing_models=tuple(_missing_model(c) for c in outcome.missing_models),
        )

    def prepare(self) -> None:
        """After an applied event is out: read the state this apply wrote, so the next change finds
        it kept (off the change -> applied path; the next reconcile still asks the database whether
        anyone wrote since). A failure here only means the next reconcile reads it itself."""
        if self.config.evaluate is not None or self.engine is None:
            return
        from reconciler.state.db import translate_db_errors
        from reconciler.state.snapshot import read_snapshot

        kept = self._kept()
        try:
            with translate_db_errors(self.engine.url, "reading the state"):
                self._drift(kept.refresh(read_snapshot))
        except Exception:  # noqa: BLE001 - the next reconcile reads the state and reports what fails
            kept.forget()

    def retry_due(self) -> bool:
        return self.retry_at is not None and self.clock() >= self.retry_at

    def check(self) -> ReconcileEvent | None:
        """The interval check: look for drift (and heal it if asked). Skipped while a transient
        failure waits for its retry: the retry is the check."""
        if self.retry_at is not None and self.transient:
            return None
        from reconciler.state.db import translate_db_errors
        from reconciler.state.snapshot import read_snapshot

        started = time.perf_counter()
        try:
            engine = self._engine()
            with translate_db_errors(engine.url, "checking for drift"):
                drift = self._drift(self._kept().refresh(read_snapshot))  # read again only if someone wrote
            statuses = self._provider_changes(engine)
        except Exception as exc:  # noqa: BLE001
            return self._failed("interval", started, exc, (), None)
        found = ReconcileEvent("interval", "drift" if drift else "in-sync", _ms(started), drift=drift, provider_status=statuses)
        if drift and self.config.self_heal:
            return self.reconcile("self-heal") or found  # None: the manifests cannot be applied, as reported
        return found

    def missed_changes(self) -> tuple[str, ...]:
        """Files that changed since the last reconcile although no notification said so."""
        now = files_signature(self.config.paths)
        return tuple(sorted({entry[0] for entry in now ^ self.signature}))

    def close(self) -> None:
        self._forget_engine()


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def check_paths(paths: tuple[str, ...]) -> None:
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise ReconcilerError([Problem(f"cannot watch {p}: no such file or directory", hint="pass the manifests directory") for p in missing])


def git_dir_of(path: str) -> Path | None:
    """The .git directory of the checkout holding ``path`` (None outside git)."""
    from reconciler.gitinfo import git_output

    start = Path(path).resolve()
    out = git_output(start if start.is_dir() else start.parent, "rev-parse", "--absolute-git-dir")
    return Path(out.strip()) if out is not None else None


Event = ReconcileEvent | RunEvent
STANDBY_POLL_SECONDS = 2.0  # how often a standby tries to take over: a SIGKILLed leader is replaced within this


def _lead(leadership: Any, say: Callable[[Event | None], None], stop: threading.Event, trigger: Trigger) -> Trigger | None:
    """Return once this process leads, with the trigger of its first reconcile (``trigger`` when
    it led at once, ``takeover`` after standing by), or None when asked to stop first. Says once
    that it stands by, and who leads. A database that cannot be reached elects nobody: the caller
    goes on, its reconcile reports the database error and retries, and the next look decides."""
    if leadership.try_acquire() is not False:
        return trigger
    say(ReconcileEvent(trigger, "standby", 0.0, leader=leadership.holder()))
    while not stop.wait(STANDBY_POLL_SECONDS):
        if leadership.try_acquire():
            return "takeover"
    return None


def _leadership(db: str | None) -> Any:
    from reconciler.state.lock import Leadership
    from reconciler.workflow import open_for_apply

    return Leadership(open_for_apply(db))


def run_watch(config: WatchConfig, emit: Callable[[Event], None], stop: threading.Event, *, once: bool = False) -> None:
    """Reconcile now, then on every (debounced) change under the paths, when a failed reconcile is
    due for its retry, and every ``interval`` seconds. ``emit`` is called from one thread at a time."""
    import watchfiles

    check_paths(config.paths)
    lock = threading.Lock()

    def say(event: Event | None) -> None:
        if event is not None:
            with lock:  # run threads report too
                emit(event)

    watcher = Watcher(config)
    runs = RunStarter(config.db, say)
    leadership = None if once else _leadership(config.db)

    def report(event: ReconcileEvent | None) -> None:
        say(event)
        if event is not None and event.runs:
            runs.start(event.runs, event.apply_id)
        if event is not None and event.outcome == "applied" and not once and not stop.is_set():
            watcher.prepare()  # the state for the next change, read while nothing waits for it

    try:
        first = "startup" if leadership is None else _lead(leadership, say, stop, "startup")
        if first is None:
            return
        report(watcher.reconcile(first))
        if once:
            runs.wait()  # like `apply`: a cron job ends when its runs have
            return
        if stop.is_set():
            return
        next_check = time.monotonic() + config.interval
        scan_every = min(config.interval, MISSED_SCAN_SECONDS)
        next_scan = time.monotonic() + scan_every
        git_dir, deferred = git_dir_of(config.paths[0]), False
        wake_ms = max(50, int(min(scan_every, config.retry_initial) * 1000))
        for changes in watchfiles.watch(
            # a batch ends after 200 ms without changes (watchfiles' 50 ms splits a slow `git pull`)
            *config.paths,
            debounce=config.debounce_ms,
            step=min(200, config.debounce_ms),
            stop_event=stop,
            rust_timeout=wake_ms,
            yield_on_timeout=True,
            raise_interrupt=False,
        ):
            if stop.is_set():
                break
            if leadership is not None and not leadership.holds() and leadership.try_acquire() is False:
                # its lock's connection was lost and another watcher leads now
                again = _lead(leadership, say, stop, "interval")
                if again is None:
                    break
                report(watcher.reconcile(again))
                continue
            changed: tuple[str, ...] = ()
            if changes:
                changed = tuple(sorted({path for _, path in changes}))
            elif time.monotonic() >= next_scan:
                changed = watcher.missed_changes()
                next_scan = time.monotonic() + scan_every
            busy = git_dir is not None and (git_dir / "index.lock").exists()
            if changed and busy:
                # a checkout or pull is writing files: wait for it, never apply half of a commit
                if not deferred:
                    say(ReconcileEvent("files", "deferred", 0.0, files=changed))
                deferred = True
                continue
            if changed or (deferred and not busy):
                deferred = False
                report(watcher.reconcile("files", changed or watcher.missed_changes()))
            elif watcher.retry_due() and not busy:
                report(watcher.reconcile("retry"))
            if stop.is_set():
                break
            if time.monotonic() >= next_check:
                report(watcher.check())
                next_check = time.monotonic() + config.interval
    finally:
        watcher.close()
        runs.stop()
        if leadership is not None:
            leadership.release()
        say(ReconcileEvent("stop", "stopped", 0.0))
