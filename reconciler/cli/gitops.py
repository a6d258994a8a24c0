"""GitOps commands: drift, watch, export, adopt."""

from __future__ import annotations

import click

from reconciler.cli import cli
from reconciler.cli.options import db_option, evaluate_options, evaluate_request, note_missing_database, read_engine, validation_timeout_option


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path())
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print the drift as JSON.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0 when there is no drift, 2 when there is.")
def drift(paths: tuple[str, ...], db: str | None, as_json: bool, detailed_exitcode: bool) -> int:
    """Report managed resources changed in the database outside reconciler since they were applied.

    Compares the database with what reconciler last applied, not with the manifests; PATHs, when
    given, limit the report to the resources they define. For cron and CI.
    """
    from reconciler.gitops.drift import (
        detect_drift,
        render_drift_json,
        render_drift_text,
    )
    from reconciler.state.snapshot import load_state

    only = None
    if paths:
        from reconciler.manifests.loader import load_manifests

        only = {m.key for m in load_manifests(list(paths)).manifests}
    note_missing_database(db)
    found = detect_drift(load_state(db), only)  # a SQLite file through sqlite3, as plan reads it
    click.echo((render_drift_json if as_json else render_drift_text)(found), nl=False)
    return 2 if detailed_exitcode and found else 0


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@db_option
@click.option("--interval", type=click.FloatRange(min=0.05), default=60.0, show_default=True, help="Seconds between drift checks.")
@click.option("--self-heal/--report-only", default=False, help="Revert drift on each check, or only report it (default).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line for each reconcile and each run event.")
@click.option(
    "--debounce",
    "debounce_ms",
    type=click.IntRange(min=1),
    default=1600,
    show_default=True,
    help="Milliseconds to group file changes into one reconcile.",
)
@click.option("--lock-timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for another apply.")
@click.option("--allow-mass-delete", is_flag=True, help="Allow reconciles that delete more than half of the managed resources.")
@click.option("--once", is_flag=True, help="Reconcile once, wait for the runs it starts, and exit (cron; exit 1 if anything failed).")
@click.option("--no-validate", is_flag=True, help="Do not probe created or changed providers after each apply.")
@validation_timeout_option("Seconds each provider may take to answer.", show_default=True)
@click.option(
    "--retry-initial",
    type=click.FloatRange(min=0.05),
    default=5.0,
    show_default=True,
    help="Seconds before the first retry of a failed apply; doubles with each failure.",
)
@click.option(
    "--retry-max", type=click.FloatRange(min=0.05), default=300.0, show_default=True, help="Longest wait between retries of a failed apply."
)
@evaluate_options
def watch(
    paths: tuple[str, ...],
    db: str | None,
    interval: float,
    self_heal: bool,
    as_json: bool,
    debounce_ms: int,
    lock_timeout: float,
    allow_mass_delete: bool,
    once: bool,
    no_validate: bool,
    validation_timeout: float,
    retry_initial: float,
    retry_max: float,
    evaluate: bool,
    max_eval_cost: float | None,
) -> int:
    """Keep the database equal to the manifests: apply on every change, check for drift on an interval.

    Invalid manifests, an unreachable database or a refused plan are reported and the loop goes on.
    A failed apply is retried with exponential backoff (--retry-initial, doubling up to --retry-max,
    slightly jittered) and at once on the next change; invalid manifests are reported once and wait
    for the next change. With --evaluate, a change is evaluated before it is applied; one that fails
    a gate is not applied, is reported once (outcome `gated`) and waits for the next change.

    Runs with `trigger: on_apply` start as `apply` starts them, but in the background: the loop keeps
    applying changes while they work, and each run's start and end (status, errors, a hint) are
    reported. SIGINT/SIGTERM stop the loop after the current transaction and ask runs to stop after
    the items in flight (up to 10 s); `reconciler run NAME` resumes them.
    """
    import json
    import signal
    import sys
    import threading

    from reconciler.gitops.watch import Event, WatchConfig, run_watch

    if retry_max < retry_initial:
        raise click.UsageError("--retry-max must be at least --retry-initial")
    stop = threading.Event()
    failed = []

    def emit(event: Event) -> None:
        if event.failed:
            failed.append(event)
        if event.quiet and not as_json:
            return
        click.echo(json.dumps(event.to_dict(), ensure_ascii=False, default=str) if as_json else event.render_text())
        sys.stdout.flush()

    def request_stop(signum: int, _frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        config = WatchConfig(
            tuple(paths),
            db,
            interval,
            self_heal,
            debounce_ms,
            lock_timeout,
            allow_mass_delete,
            not no_validate,
            validation_timeout,
            retry_initial,
            retry_max,
            evaluate=evaluate_request(evaluate, max_eval_cost),
        )
        if not as_json and not once:
            mode = "self-heal" if self_heal else "report-only"
            click.echo(f"Watching {', '.join(paths)} (drift check every {interval:g} s, {mode}); Ctrl-C stops.")
        run_watch(config, emit, stop, once=once)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 1 if once and failed else 0


@cli.command()
@db_option
@click.option("--out", type=click.Path(file_okay=False), help="Write one file per kind into DIR (new or empty); default: print.")
def export(db: str | None, out: str | None) -> int:
    """Write the database's configuration as manifests (secrets as references, never values)."""
    from pathlib import Path

    from reconciler.errors import Location, Problem, ReconcilerError
    from reconciler.gitops.export import FILE_NAMES, export_documents, render_documents
    from reconciler.state.db import translate_db_errors
    from reconciler.state.snapshot import StateSnapshot, load_snapshot

    target = Path(out) if out else None
    if target is not None and target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ReconcilerError(
            Problem(
                "export directory exists and is not empty",
                Location(str(target)),
                hint="choose a new or empty directory; export never overwrites files",
            )
        )
    engine = read_engine(db)
    snapshot = StateSnapshot.empty()
    if engine is not None:
        with translate_db_errors(engine.url, "reading the configuration"):
            snapshot = load_snapshot(engine)
    docs = export_documents(snapshot)
    for d in docs:
        for note in d.notes:
            click.echo(f"warning: {d.kind} {d.name!r}: {note}", err=True)
    unmanaged = sum(1 for d in docs if not d.managed)
    if target is None:
        click.echo(render_documents(docs), nl=False)
    else:
        try:
            target.mkdir(parents=True, exist_ok=True)
            for kind, file_name in FILE_NAMES.items():
                of_kind = [d for d in docs if d.kind == kind]
                if of_kind:
                    (target / file_name).write_text(render_documents(of_kind), encoding="utf-8")
        except OSError as exc:
            raise ReconcilerError(f"cannot write {target}: {exc.strerror or exc}") from None
        click.echo(f"Exported {len(docs)} resources to {target}/.")
    if unmanaged:
        click.echo(
            f"note: {unmanaged} of them are not managed by reconciler yet; `reconciler adopt --all` puts them under management, "
            "then `reconciler plan` on the export shows no changes.",
            err=True,
        )
    return 0


@cli.command()
@click.argument("targets", nargs=-1, metavar="KIND/NAME...")
@db_option
@click.option("--all", "adopt_all", is_flag=True, help="Adopt every unmanaged row.")
@click.option(
    "--rename",
    is_flag=True,
    help="Rename rows whose names are not manifest names to their slugs (default: keep the names the service looks them up by).",
)
@click.option("--lock-timeout", type=float, default=None, help="Seconds to wait for another apply to finish (default 60).")
def adopt(targets: tuple[str, ...], db: str | None, adopt_all: bool, rename: bool, lock_timeout: float | None) -> int:
    """Put existing rows reconciler does not manage under management (KIND/NAME, globs allowed).

    A row whose name is not a manifest name ("Message Classifier") is managed by its slug
    ("message-classifier") and keeps its own name in the database, as the annotation
    reconciler/row-name that `reconciler export` writes records; --rename renames it to the slug.
    """
    from reconciler.errors import ReconcilerError
    from reconciler.gitops.adopt import adopt as adopt_rows
    from reconciler.state.db import translate_db_errors
    from reconciler.state.lock import DEFAULT_LOCK_TIMEOUT, apply_lock, holder_identity
    from reconciler.workflow import open_for_apply

    if bool(targets) == adopt_all:
        raise ReconcilerError("give KIND/NAME arguments or --all (not both)", hint="e.g. reconciler adopt agent/triage provider/openai")
    engine = open_for_apply(db)
    timeout = DEFAULT_LOCK_TIMEOUT if lock_timeout is None else lock_timeout
    with translate_db_errors(engine.url, "adopting rows"), apply_lock(engine, timeout, command="adopt"):
        result = adopt_rows(engine, None if adopt_all else list(targets), holder_identity(), rename=rename)
    for a in result.adopted:
        renamed = f" (renamed from {a.renamed_from!r})" if a.renamed_from else ""
        kept = f" (keeps its row name {a.row_name!r})" if a.row_name else ""
        click.echo(f"  adopted {a.kind.lower()} {a.name}{renamed}{kept}")
        if a.secret_note:
            click.echo(f"warning: {a.kind} {a.name!r}: {a.secret_note}", err=True)
    for m in result.already_managed:
        click.echo(f"  {m} is already managed")
    if result.apply_id is not None:
        click.echo(f"Adopted {len(result.adopted)} resources (#{result.apply_id}).")
    elif not result.already_managed:
        click.echo("Nothing to adopt.")
    return 0
