"""The pipeline in one place: manifests -> desired state; database -> snapshot; diff -> plan -> guard
rails; apply; then validate the changed providers and start the ``on_apply`` runs.

``plan_from_paths`` and ``apply_manifests`` are the use cases: `plan`, `apply`, `watch` and
`run FILE` all call them and render the values they return. Each stage is a module of its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.errors import Problem, ReconcilerError, first_line
from reconciler.manifests.loader import Manifest, ManifestSet, load_manifests
from reconciler.plan.desired import DesiredMemo, DesiredResource, desired_state
from reconciler.plan.diff import diff
from reconciler.plan.guards import GuardOptions, guard_plan
from reconciler.plan.model import Change, Plan
from reconciler.state.db import SqliteFile, database_url, open_engine, prepare_sqlite_file, translate_db_errors, writable_sqlite_file
from reconciler.state.lock import DEFAULT_LOCK_TIMEOUT, apply_lock, holder_identity
from reconciler.state.snapshot import StateSnapshot, load_snapshot, load_state

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from reconciler.apply import ApplyMeta, ApplyResult, SecretResolver
    from reconciler.plan.evaluate import EvaluateOptions
    from reconciler.providers.model_check import ModelCheck
    from reconciler.providers.secrets import SecretBox
    from reconciler.providers.validation import ValidationResult
    from reconciler.runs.triggered import TriggeredRun
    from reconciler.state.kept import KeptSnapshot, KeptSqliteState

    Target = Engine | SqliteFile  # where an apply writes: an engine, or a SQLite file without SQLAlchemy
    _Committed = tuple[Plan, StateSnapshot, Target, ApplyResult, ManifestSet]  # an apply's, for _after_commit, and what it read


@dataclass(frozen=True)
class PlanRequest:
    paths: list[str]
    db: str | None = None
    prune: bool = True
    git: dict[str, Any] | None = None
    guards: GuardOptions | None = None
    evaluate: EvaluateOptions | None = None  # --evaluate: the behaviour diff of the changed assignments


def _needs_secrets(manifests: ManifestSet) -> bool:
    return any(m.spec.api_key is not None for m in manifests.of_kind("Provider"))


def resolve_manifest_secrets(manifests: ManifestSet) -> dict[str, str]:
    """Provider name -> plain API key, for every provider with an api_key. Every unreadable or
    disallowed reference is reported at once, located at its manifest field."""
    from reconciler.errors import Problem, ReconcilerError
    from reconciler.kinds.base import plain_dump
    from reconciler.providers.secrets import SecretRefError, read_reference

    values: dict[str, str] = {}
    problems: list[Problem] = []
    for m in manifests.of_kind("Provider"):
        if m.spec.api_key is None:
            continue
        ref = plain_dump(m.spec.api_key, exclude_none=True)
        try:
            values[m.name] = read_reference(ref, Path(m.raw.file), m.root)
        except SecretRefError as err:
            field_path = ("spec", "api_key", err.field or next(iter(ref)))
            problems.append(Problem(err.message, m.raw.where(field_path), m.title, ".".join(field_path), err.hint))
    if problems:
        raise ReconcilerError(problems)
    return values


def secret_box_for(manifests: ManifestSet, snapshot: StateSnapshot | None) -> SecretBox:
    """The key ring for planning: it must decrypt the API keys reconciler itself stored for the
    providers in the manifests, or the HMAC comparison would claim every key changed (a wrong or
    lost key). A ciphertext written by someone else (the seed service, an edit outside reconciler)
    is not checked: the plan shows it as changed and apply replaces it."""
    from reconciler.errors import name_list
    from reconciler.providers.secrets import load_secret_box, undecryptable

    wanted = {m.name for m in manifests.of_kind("Provider") if m.spec.api_key is not None}
    stored = {
        name: r.secret_ciphertext
        for (kind, name), r in (snapshot.resources.items() if snapshot is not None else ())
        if kind == "Provider" and r.secret_ciphertext is not None and (r.essence.get("api_key") or {}).get("hmac")
    }
    box = load_secret_box(
        create=not stored,
        needed_for=f"the database holds API keys encrypted for providers {name_list(set(stored))}",
    )
    bad = sorted(name for name, token in stored.items() if name in wanted and not box.sealed(token))
    if bad:
        raise undecryptable(bad, box.source)
    return box


def secret_encrypter() -> Callable[[Change], tuple[bytes, str]]:
    from reconciler.providers.secrets import load_secret_box, resolve_secret

    box = load_secret_box(create=True)

    def encrypt(change: Change) -> tuple[bytes, str]:
        source = (change.desired or {})["_secret_source"]
        value = resolve_secret(source["ref"], source["manifest"], source["root"], change.name)
        return box.encrypt(value), box.fingerprint(value)

    return encrypt


def desired_from(
    manifests: ManifestSet, snapshot: StateSnapshot | None = None, memo: DesiredMemo | None = None
) -> dict[tuple[str, str], DesiredResource]:
    """The desired state; provider secrets are read (references first, then the key) only if present."""
    if not _needs_secrets(manifests):
        return desired_state(manifests, None, memo)
    values = resolve_manifest_secrets(manifests)
    box = secret_box_for(manifests, snapshot)

    def fingerprint(ref: dict[str, str], m: Manifest) -> str:
        return box.fingerprint(values[m.name])

    return desired_state(manifests, fingerprint, memo)


def compute_plan(
    manifests: ManifestSet,
    snapshot: StateSnapshot,
    *,
    prune: bool,
    sources: list[str],
    git: dict[str, Any] | None,
    guards: GuardOptions | None = None,
    memo: DesiredMemo | None = None,
) -> Plan:
    """Diff, then the guard rails (--target/--exclude, prevent-destroy, mass delete), then the
    values the database's enum columns lack (shown by the plan, refused by apply)."""
    from reconciler.plan.enums import enum_shortfalls

    desired = desired_from(manifests, snapshot, memo)
    the_plan = diff(desired, snapshot, prune=prune, sources=tuple(sources), git=git)
    guards = guards or GuardOptions()
    known = set(desired) | set(snapshot.resources) if guards.narrows else set()  # only --target/--exclude look at it
    the_plan = guard_plan(the_plan, snapshot, known, guards)
    shortfalls = enum_shortfalls(the_plan.changes, snapshot.columns)
    return replace(the_plan, enum_shortfalls=shortfalls) if shortfalls else the_plan


def plan_from_paths(request: PlanRequest) -> tuple[Plan, ManifestSet]:
    """Read-only: validate manifests and diff them against the database (creates nothing). Without
    --evaluate a SQLite state is read without SQLAlchemy (``load_state``)."""
    manifests = load_manifests(request.paths)
    if request.evaluate is None:
        snapshot = load_state(request.db)
    else:  # the answer cache is in the database: an engine
        engine = open_engine(request.db, create=False)
        with translate_db_errors(database_url(request.db), "reading the current state"):
            snapshot = load_snapshot(engine)
    the_plan = compute_plan(manifests, snapshot, prune=request.prune, sources=request.paths, git=request.git, guards=request.guards)
    if request.evaluate is not None:
        the_plan = evaluated(the_plan, snapshot, manifests, engine, request.evaluate)
    return the_plan, manifests


def evaluated(the_plan: Plan, snapshot: StateSnapshot, manifests: ManifestSet, engine: Engine | None, options: EvaluateOptions) -> Plan:
    """``the_plan`` with the behaviour diff of the assignments it changes (--evaluate): the models
    are called here, and the answer cache is the only thing written."""
    from reconciler.plan.evaluate import evaluate_plan, evaluation_tasks

    with translate_db_errors(engine.url if engine is not None else database_url(None), "evaluating the plan"):
        diffs = evaluate_plan(the_plan, snapshot, manifests, engine, options)
    return replace(the_plan, evaluations=diffs, evaluation_tasks=evaluation_tasks(manifests))


def check_gates(the_plan: Plan, ignore_gates: bool) -> Plan:
    """Refuse a plan whose evaluation failed a gate (``GatesFailed``: nothing is written), unless
    ``ignore_gates``: then the plan says so, and the history keeps it."""
    failed = the_plan.failed_gates
    if not failed:
        return the_plan
    from reconciler.errors import GatesFailed
    from reconciler.plan.behaviour import gate_problems  # only for a failed gate: ~5 ms of every apply

    if not ignore_gates:
        raise GatesFailed(gate_problems(failed, applying=True))
    return replace(the_plan, gates_ignored=True)


def open_for_apply(db: str | None) -> Engine:
    engine = open_engine(db, create=True)
    assert engine is not None
    return engine


def apply_meta(command: str, sources: list[str], git: dict[str, Any] | None) -> ApplyMeta:
    from reconciler.apply import ApplyMeta

    return ApplyMeta(user=holder_identity(), command=command, source=" ".join(sources), git=git)


def encrypter_for(plan: Plan) -> SecretResolver | None:
    """The secret encrypter, loaded only when the plan writes a secret."""
    needs = any(c.desired and c.desired.get("_secret_source") for c in plan.changes)
    return secret_encrypter() if needs else None


def run_apply(engine: Target, plan: Plan, meta: ApplyMeta, *, extend_enums: bool = False, kept: KeptSqliteState | None = None) -> ApplyResult:
    """Execute a plan (the caller holds the lock); secrets are encrypted only if the plan needs it.
    With ``extend_enums`` (an engine only), the values the database's enums lack are added first, in
    a transaction of their own that commits before the apply's (PostgreSQL cannot use a value in the
    transaction that added it); without it, the executor refuses a plan that needs them."""
    from reconciler.apply import execute_plan
    from reconciler.apply import extend_enums as add_enum_values

    encrypt = encrypter_for(plan)  # before anything is written: a missing key changes nothing
    with translate_db_errors(engine.url, "applying the plan"):
        extended = add_enum_values(engine, plan, meta) if extend_enums and not isinstance(engine, SqliteFile) else ()
        result = execute_plan(engine, plan, meta, encrypt, kept)
    return replace(result, extended=extended) if extended else result


def _sqlite_file(request: ApplyRequest) -> SqliteFile | None:
    """Where the request applies without SQLAlchemy: a plain SQLite file that needs no migration,
    for an apply with nothing unusual (no engine the caller keeps, no evaluation, no enums to
    extend, no planning inside the transaction). None: the engine's way."""
    if request.engine is not None or request.evaluate is not None or request.extend_enums or request.plan_in_transaction:
        return None
    return writable_sqlite_file(request.db)


def _open_target(request: ApplyRequest, file: SqliteFile | None) -> Target:
    """``open_for_apply``: the schema created or migrated (``file``: created if new)."""
    if request.engine is not None:
        return request.engine
    if file is None:
        return open_for_apply(request.db)
    prepare_sqlite_file(file)
    return file


def _current_state(existing: Target | None, db: str | None, kept: KeptSqliteState | None = None) -> StateSnapshot:
    """The state now (an empty one for a database not there yet; ``kept``: read on its connection)."""
    if kept is not None:
        with translate_db_errors(kept.file.url, "reading the current state"):
            return kept.load()
    if isinstance(existing, SqliteFile):
        return load_state(db)  # through sqlite3
    with translate_db_errors(database_url(db) if existing is None else existing.url, "reading the current state"):
        return load_snapshot(existing)


@dataclass(frozen=True)
class ApplyRequest:
    """What to apply and how. ``paths`` are where the manifests are read (for --git-ref, a
    temporary copy); ``sources`` how the history names them."""

    paths: list[str]
    db: str | None = None
    prune: bool = True
    git: dict[str, Any] | None = None
    guards: GuardOptions | None = None
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    command: str = "apply"  # recorded in the history: apply | watch | run
    sources: list[str] | None = None
    only_kind: str | tuple[str, ...] | None = None  # `run FILE`: the file may hold only manifests of these kinds ...
    external_refs: bool = False  # ... whose references may name resources only the database has
    validate_providers: bool = True  # probe created or changed providers after the commit
    validation_timeout: float = 10.0
    wait_validation: bool = False  # a validation that cannot run is an error (CI), not a warning
    start_runs: bool = True  # start the ``trigger: on_apply`` runs the apply created or changed
    engine: Engine | None = None  # an engine the caller keeps open (watch); else one is opened for the request
    manifests: ManifestSet | None = None  # already loaded from ``paths`` by the caller (watch tells invalid input apart)
    extend_enums: bool = False  # add the values the database's enum columns lack (ALTER TYPE ... ADD VALUE)
    # plan inside the apply's write transaction, reading the state once (watch: nobody confirms the
    # plan; the schema is created first; not with extend_enums, which commits before the apply, nor
    # with evaluate: no model is called while the write transaction is open)
    plan_in_transaction: bool = False
    kept: KeptSnapshot | None = None  # watch, planning in the transaction: the snapshot it keeps between changes
    desired_memo: DesiredMemo | None = None  # watch: the desired resources of the manifests it loaded last time
    evaluate: EvaluateOptions | None = None  # evaluate the changed assignments first; a failed gate applies nothing
    ignore_gates: bool = False  # apply even when a gate failed (the history records it)


def _no_confirm(plan: Plan) -> None:
    return None


@dataclass(frozen=True)
class ApplyHooks:
    """Where the caller sees the pipeline's steps: to print them, to ask, to start runs its own way."""

    relocate: Callable[[Plan], Plan] = lambda plan: plan  # --git-ref: sources as in the repository
    warnings: Callable[[tuple[Problem, ...]], None] = lambda problems: None
    show_plan: Callable[[Plan], None] = lambda plan: None
    confirm: Callable[[Plan], None] = _no_confirm  # raises to refuse; called only for a non-empty plan
    # (engine, run names) -> how each went; None: start them one after another here
    start_runs: Callable[[Engine, tuple[str, ...]], tuple[TriggeredRun, ...]] | None = None
    # what reading, planning and writing run inside, up to the commit (not the steps after it, which
    # may call providers and models): the `apply` command's ``gcpolicy.no_collection``
    batch: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext


@dataclass(frozen=True)
class ApplyOutcome:
    """What one apply did, for the caller to render."""

    plan: Plan
    snapshot: StateSnapshot  # the state the plan was made against
    result: ApplyResult | None = None  # None: nothing was applied (an empty plan)
    engine: Engine | None = None
    validations: tuple[ValidationResult, ...] = ()
    problems: tuple[Problem, ...] = ()  # warnings from after the commit (validation could not run)
    runs: tuple[TriggeredRun, ...] = ()
    manifests: ManifestSet | None = None  # what was read (None for a saved plan)
    missing_models: tuple[ModelCheck, ...] = ()  # active agents whose model their provider does not serve

    @property
    def applied(self) -> bool:
        return self.result is not None and self.result.apply_id is not None


def _check_only_kind(manifests: ManifestSet, request: ApplyRequest) -> None:
    if request.only_kind is None:
        return
    kinds = (request.only_kind,) if isinstance(request.only_kind, str) else request.only_kind
    kind = " or ".join(kinds)
    others = [m for m in manifests.manifests if m.kind not in kinds]
    where = " ".join(request.sources or request.paths)
    if others:
        raise ReconcilerError(
            Problem(
                f"`reconciler run FILE` takes only {kind} manifests; {others[0].title} is a {others[0].kind}",
                others[0].location,
                hint=f"apply the configuration first: reconciler apply {where}",
            )
        )
    if not manifests.manifests:
        raise ReconcilerError(f"{where} holds no {kind} manifest", hint=f"pass a run's name or a file with kind: {kinds[0]} documents")


def _check_external_refs(manifests: ManifestSet, snapshot: StateSnapshot) -> None:
    """References the manifests leave to the database must be there (``run FILE``)."""
    from reconciler.kinds import BY_NAME

    declared = {m.key for m in manifests.manifests}
    problems = [
        Problem(
            f"refers to {ref.kind} {getattr(m.spec, f)!r}, which is not in the database",
            m.raw.where(("spec", f)),
            m.title,
            f"spec.{f}",
            f"apply the {ref.kind.lower()} first (reconciler apply PATH), or fix the name",
        )
        for m in manifests.manifests
        for f, ref in BY_NAME[m.kind].references.items()
        if (ref.kind, getattr(m.spec, f)) not in snapshot.resources and (ref.kind, getattr(m.spec, f)) not in declared
    ]
    if problems:
        raise ReconcilerError(problems)


def _shown_plan(
    manifests: ManifestSet, snapshot: StateSnapshot, request: ApplyRequest, hooks: ApplyHooks, sources: list[str], engine: Engine | None = None
) -> Plan:
    """The plan against ``snapshot``, relocated, evaluated when asked (``engine``: the answer cache's
    database, None when there is none yet) and shown."""
    if request.external_refs:
        _check_external_refs(manifests, snapshot)
    the_plan = compute_plan(
        manifests, snapshot, prune=request.prune, sources=sources, git=request.git, guards=request.guards, memo=request.desired_memo
    )
    the_plan = hooks.relocate(the_plan)
    if request.evaluate is not None and not the_plan.is_empty:
        the_plan = evaluated(the_plan, snapshot, manifests, engine, request.evaluate)
        if the_plan.failed_gates and request.ignore_gates:
            the_plan = replace(the_plan, gates_ignored=True)
    hooks.show_plan(the_plan)
    return the_plan


def apply_manifests(request: ApplyRequest, hooks: ApplyHooks = ApplyHooks()) -> ApplyOutcome:
    """Validate the manifests, then under the apply lock: read the state, plan, check the guard
    rails, show and confirm the plan, apply it in one transaction; after the commit (and the lock):
    validate the providers it created or changed and start its ``on_apply`` runs.

    Bad input stops before the database is touched; the schema is created or migrated only once
    the plan is confirmed (the fingerprint check inside the apply transaction catches anyone who
    changed the database meanwhile)."""
    with hooks.batch():
        applied = _apply_until_commit(request, hooks)
    if isinstance(applied, ApplyOutcome):
        return applied
    the_plan, snapshot, target, result, manifests = applied
    return replace(_after_commit(the_plan, snapshot, target, result, request, hooks), manifests=manifests)


def _apply_until_commit(request: ApplyRequest, hooks: ApplyHooks) -> ApplyOutcome | _Committed:
    """``apply_manifests`` up to the commit: an outcome when nothing was applied."""
    manifests = request.manifests or load_manifests(request.paths, external_refs=request.external_refs)
    _check_only_kind(manifests, request)
    hooks.warnings(manifests.warnings)
    sources = request.sources or request.paths
    if request.plan_in_transaction:
        return _plan_and_apply_in_one_transaction(manifests, request, hooks, sources)
    file = _sqlite_file(request)
    with contextlib.ExitStack() as held:
        existing: Target | None
        if file is not None:
            existing = None if file.new else file
        else:
            existing = request.engine or open_engine(request.db, create=False)
        if existing is not None:
            held.enter_context(translate_db_errors(existing.url, "reconciling" if request.command == "watch" else "applying"))
            held.enter_context(apply_lock(existing, request.lock_timeout, command=request.command))
        kept = _kept_sqlite(existing, held)
        new_file = file is not None and file.new  # an empty state, and the key file's place beside the file
        snapshot = load_state(request.db) if new_file else _current_state(existing, request.db, kept)
        engine_now = existing if not isinstance(existing, SqliteFile) else None
        if request.evaluate is not None and engine_now is None:  # no answer cache yet: keep the answers for after the commit
            request = replace(request, evaluate=replace(request.evaluate, uncached=[]))
        the_plan = _shown_plan(manifests, snapshot, request, hooks, sources, engine_now)
        if the_plan.is_empty:
            return ApplyOutcome(the_plan, snapshot, engine=engine_now, manifests=manifests)
        check_gates(the_plan, request.ignore_gates)  # after showing the behaviour diff, before asking
        if the_plan.enum_shortfalls and not request.extend_enums:
            from reconciler.plan.enums import refusal

            raise refusal(the_plan.enum_shortfalls)  # before asking, and before the schema is migrated
        hooks.confirm(the_plan)
        engine = _open_target(request, file)
        if existing is None:
            held.enter_context(apply_lock(engine, request.lock_timeout, command=request.command))
        result = run_apply(engine, the_plan, apply_meta(request.command, sources, request.git), extend_enums=request.extend_enums, kept=kept)
        if request.evaluate is not None and request.evaluate.uncached:
            _store_answers(_EngineOf(engine)(), request.evaluate.uncached, hooks)
    return the_plan, snapshot, engine, result, manifests


def _store_answers(engine: Engine, answers: list[Any], hooks: ApplyHooks) -> None:
    """The answers an evaluation gave before the database existed, into the answer cache the apply
    has just created (its own transaction, under the apply lock), so the next evaluation reuses
    them as it would have with a database from the start. The apply has committed: a failure here
    is a warning (the next evaluation asks again), not a failed apply."""
    from reconciler.runs import answer_cache

    try:
        with translate_db_errors(engine.url, "storing the evaluation's answers"):
            answer_cache.store(engine, answers)
    except ReconcilerError as exc:
        hooks.warnings(tuple(replace(p, message=f"the evaluation's answers were not cached: {p.message}", severity="warning") for p in exc.problems))


def _kept_sqlite(existing: Target | None, held: contextlib.ExitStack) -> KeptSqliteState | None:
    """For a SQLite file apply writes without SQLAlchemy: the connection it plans and writes on
    (closed with ``held``)."""
    if not isinstance(existing, SqliteFile):
        return None
    from reconciler.state.kept import KeptSqliteState

    return held.enter_context(contextlib.closing(KeptSqliteState(existing)))


def _plan_and_apply_in_one_transaction(
    manifests: ManifestSet, request: ApplyRequest, hooks: ApplyHooks, sources: list[str]
) -> ApplyOutcome | _Committed:
    """``apply_manifests`` for a caller that confirms nothing: the state is read, planned against
    and written in one write transaction (``apply.plan_and_execute``), under the apply lock."""
    assert not request.extend_enums, "enum values are added in a transaction of their own, before the plan is applied"
    assert hooks.confirm is _no_confirm, "nobody may be asked while the write transaction is open"
    assert request.evaluate is None, "no model is called while the write transaction is open"
    from reconciler.apply import plan_and_execute

    engine = request.engine if request.engine is not None else open_for_apply(request.db)

    def make_plan(snapshot: StateSnapshot) -> Plan:  # values an enum column lacks: refused by plan_and_execute
        return _shown_plan(manifests, snapshot, request, hooks, sources)

    doing = "reconciling" if request.command == "watch" else "applying"
    with translate_db_errors(engine.url, doing), apply_lock(engine, request.lock_timeout, command=request.command):
        meta = apply_meta(request.command, sources, request.git)
        the_plan, snapshot, result = plan_and_execute(engine, make_plan, meta, encrypter_for, request.kept)
    if result.apply_id is None:
        return ApplyOutcome(the_plan, snapshot, engine=engine, manifests=manifests)
    return the_plan, snapshot, engine, result, manifests


def apply_saved_plan(saved: Plan, request: ApplyRequest, hooks: ApplyHooks = ApplyHooks()) -> ApplyOutcome:
    """`apply FILE`: exactly the saved plan, refused if the database changed since it was made;
    then the same after-commit steps as ``apply_manifests``."""
    engine = _open_target(request, _sqlite_file(request))
    with hooks.batch(), translate_db_errors(engine.url, "applying"), apply_lock(engine, request.lock_timeout, command=request.command):
        if saved.evaluations is not None:
            _check_evaluated(saved, _current_state(engine, request.db))
            saved = check_gates(saved, request.ignore_gates)
        hooks.show_plan(saved)
        result = run_apply(engine, saved, apply_meta(request.command, list(saved.sources), saved.git), extend_enums=request.extend_enums)
    return _after_commit(saved, StateSnapshot.empty(), engine, result, request, hooks)


def _check_evaluated(saved: Plan, snapshot: StateSnapshot) -> None:
    """A saved plan's evaluation holds for the configurations it evaluated, and covers every assignment
    whose task has an evaluation that it changes: refuse it otherwise (nothing is written)."""
    from reconciler.errors import StalePlan
    from reconciler.plan.evaluate import stale_evaluation

    problem = stale_evaluation(saved, snapshot)
    if problem is not None:
        raise StalePlan(problem, hint="make and evaluate a new plan (reconciler plan ... --evaluate --out FILE) and apply that")


class _EngineOf:
    """The engine of an apply's target, opened only when a step after the commit needs one (a
    SQLite file is written without: validating providers and starting runs import SQLAlchemy)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.opened: Engine | None = None if isinstance(target, SqliteFile) else target

    def __call__(self) -> Engine:
        if self.opened is None:
            assert isinstance(self.target, SqliteFile)
            self.opened = open_engine(self.target.url, create=False)
            assert self.opened is not None, "the apply has just written the file"
        return self.opened


def _after_commit(plan: Plan, snapshot: StateSnapshot, target: Target, result: ApplyResult, request: ApplyRequest, hooks: ApplyHooks) -> ApplyOutcome:
    engine = _EngineOf(target)
    validations, problems = _validate_after(engine, result, request)
    missing = _missing_models(target) if request.validate_providers and not problems else ()
    runs: tuple[TriggeredRun, ...] = ()
    if request.start_runs and result.runs_to_start:  # after the lock is released: a run may take hours
        runs = (hooks.start_runs or start_runs_now)(engine(), result.runs_to_start)
    return ApplyOutcome(plan, snapshot, result, engine.opened, validations, problems, runs, missing_models=missing)


def _missing_models(target: Target) -> tuple[ModelCheck, ...]:
    """Every active agent's model against its provider's last model list (whatever the apply changed)."""
    from reconciler.providers.model_check import ModelStatus, model_checks

    with translate_db_errors(target.url, "checking the agents' models"):
        checks = model_checks(target, active_only=True)
    return tuple(c for c in checks.values() if c.status is ModelStatus.MISSING)


def _validate_after(
    engine: Callable[[], Engine], result: ApplyResult, request: ApplyRequest
) -> tuple[tuple[ValidationResult, ...], tuple[Problem, ...]]:
    """Probe the providers an apply created or changed, after the commit: a failed probe never
    undoes the apply; a probe that cannot run at all is a warning."""
    if not result.changed_providers or not request.validate_providers:
        return (), ()
    from reconciler.providers.status import check_providers

    try:
        with translate_db_errors(engine().url, "validating providers"):
            return tuple(check_providers(engine(), list(result.changed_providers), timeout=request.validation_timeout, skip_inactive=True)), ()
    except Exception as exc:  # the apply has committed: validation is advisory unless waited for
        if request.wait_validation:
            raise
        if isinstance(exc, ReconcilerError):
            return (), tuple(Problem(f"provider validation skipped: {p.message}", hint=p.hint, severity="warning") for p in exc.problems)
        return (), (Problem(f"provider validation skipped: {type(exc).__name__}: {first_line(exc)}", severity="warning"),)


def start_runs_now(engine: Engine, names: tuple[str, ...]) -> tuple[TriggeredRun, ...]:
    """Start the on_apply runs one after another; one that cannot start does not stop the others."""
    from reconciler.runs.triggered import start_triggered_run

    return tuple(start_triggered_run(engine, name) for name in names)


__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "ApplyHooks",
    "ApplyOutcome",
    "ApplyRequest",
    "PlanRequest",
    "apply_lock",
    "apply_manifests",
    "apply_meta",
    "apply_saved_plan",
    "compute_plan",
    "open_for_apply",
    "plan_from_paths",
    "run_apply",
    "start_runs_now",
]
