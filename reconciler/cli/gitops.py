"""GitOps commands: drift, watch, export, adopt."""

from __future__ import annotations

import click

from reconciler.cli import cli
from reconciler.cli.core import db_option


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
    from reconciler.gitops.drift import detect_drift, render_drift_json, render_drift_text
    from reconciler.state.db import open_engine, translate_db_errors
    from reconciler.state.snapshot import StateSnapshot, load_snapshot

    only = None
    if paths:
        from reconciler.manifests.loader import load_manifests

        only = {m.key for m in load_manifests(list(paths)).manifests}
    engine = open_engine(db, create=False)
    snapshot = StateSnapshot.empty()
    if engine is not None:
        with translate_db_errors(engine.url, "reading the current state"):
            snapshot = load_snapshot(engine)
    found = detect_drift(snapshot, only)
    click.echo((render_drift_json if as_json else render_drift_text)(found), nl=False)
    return 2 if detailed_exitcode and found else 0


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@db_option
@click.option("--interval", type=click.FloatRange(min=0.05), default=60.0, show_default=True, help="Seconds between drift checks.")
@click.option("--self-heal/--report-only", default=False, help="Revert drift on each check, or only report it (default).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line for each reconcile.")
@click.option("--debounce", "debounce_ms", type=click.IntRange(min=1), default=1600, show_default=True, help="Milliseconds to group file changes into one reconcile.")
@click.option("--lock-timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for another apply.")
@click.option("--allow-mass-delete", is_flag=True, help="Allow reconciles that delete more than half of the managed resources.")
@click.option("--once", is_flag=True, help="Reconcile once and exit (cron; exit 1 if it failed).")
def watch(
    paths: tuple[str, ...], db: str | None, interval: float, self_heal: bool, as_json: bool, debounce_ms: int,
    lock_timeout: float, allow_mass_delete: bool, once: bool,
) -> int:
    """Keep the database equal to the manifests: apply on every change, check for drift on an interval.

    Invalid manifests, an unreachable database or a refused plan are reported and the loop goes on;
    SIGINT/SIGTERM stop it after the current transaction.
    """
    import json
    import signal
    import sys
    import threading

    from reconciler.gitops.watch import ReconcileEvent, WatchConfig, run_watch

    stop = threading.Event()
    failed = []

    def emit(event: ReconcileEvent) -> None:
        if event.outcome in {"invalid", "error"}:
            failed.append(event)
        quiet = event.trigger == "interval" and event.outcome == "in-sync" and not event.provider_status
        if quiet and not as_json:
            return
        click.echo(json.dumps(event.to_dict(), ensure_ascii=False, default=str) if as_json else event.render_text())
        sys.stdout.flush()

    def request_stop(signum: int, _frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        config = WatchConfig(tuple(paths), db, interval, self_heal, debounce_ms, lock_timeout, allow_mass_delete)
        if not as_json and not once:
            mode = "self-heal" if self_heal else "report-only"
            click.echo(f"Watching {', '.join(paths)} (drift check every {interval:g} s, {mode}); Ctrl-C stops.")
        run_watch(config, emit, stop, once=once)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 1 if once and failed else 0
