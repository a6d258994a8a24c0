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
