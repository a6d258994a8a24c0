"""Options and arguments several commands share (a leaf: command modules import it, never each other)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from reconciler.plan.guards import GuardOptions

db_option = click.option(
    "--db",
    envvar="RECONCILER_DATABASE_URL",
    metavar="URL",
    help="State database (default: sqlite .reconciler/state.db; env RECONCILER_DATABASE_URL).",
)
listing_option = click.option("-o", "--output", "fmt", type=click.Choice(["table", "json", "yaml"]), default="table")


def read_engine(db: str | None) -> Engine | None:
    """The engine a read command lists from (``open_engine(create=False)``: None is an empty
    state), with the note below when that is because the SQLite file does not exist."""
    from reconciler.state.db import open_engine

    engine = open_engine(db, create=False)
    if engine is None:
        note_missing_database(db)
    return engine


def note_missing_database(db: str | None) -> None:
    """On stderr, when the state database is a SQLite file that does not exist. A read command
    reads it as an empty state, as a first plan must; without the note a mistyped ``--db`` or the
    wrong directory looks like an empty database."""
    from reconciler.state.db import database_url, plain_sqlite_url, sqlite_path

    plain = plain_sqlite_url(db)  # needs no SQLAlchemy (drift reads a plain SQLite file without it)
    path = plain[1] if plain is not None else sqlite_path(database_url(db))
    if path is not None and not path.exists():
        click.echo(f"note: no database at {path}: nothing has been applied there yet (check --db and the directory)", err=True)


def validation_timeout_option(help: str, **shown: Any) -> Any:
    """--validation-timeout: how long apply and watch give each changed provider's probe."""
    return click.option("--validation-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, help=help, **shown)


paths_argument = click.argument("paths", nargs=-1, required=True, type=click.Path())


def gitops_options(f: Any) -> Any:
    """--git-ref/--repo (manifests as of a commit) and the guard rails, shared by plan and apply."""
    for option in reversed(
        [
            click.option(
                "--git-ref",
                metavar="REF",
                help="Read the manifests as of this commit/branch/tag (no checkout); PATH is then relative to the repository root.",
            ),
            click.option("--repo", metavar="PATH", help="The git repository for --git-ref (default: the one holding the current directory)."),
            click.option(
                "--target", "targets", multiple=True, metavar="KIND/NAME", help="Only plan these resources (repeatable; NAME may be a glob)."
            ),
            click.option("--exclude", "excludes", multiple=True, metavar="KIND/NAME", help="Leave these resources out of the plan (repeatable)."),
            click.option("--allow-mass-delete", is_flag=True, help="Allow a plan that deletes more than half of the managed resources."),
        ]
    ):
        f = option(f)
    return f


def evaluate_options(f: Any) -> Any:
    """--evaluate and --max-eval-cost, shared by plan and apply."""
    f = click.option(
        "--max-eval-cost",
        type=click.FloatRange(min=0),
        metavar="USD",
        help="With --evaluate: refuse before calling any model when the estimated cost is above USD.",
    )(f)
    return click.option(
        "--evaluate",
        is_flag=True,
        help="Evaluate every changed assignment whose task has an evaluation, before and after (calls models, reads secrets; "
        "writes only the answer cache); a failed gate exits 1.",
    )(f)


def evaluate_request(evaluate: bool, max_eval_cost: float | None) -> Any:
    """The EvaluateOptions of --evaluate (None without it), telling its estimate on stderr."""
    if max_eval_cost is not None and not evaluate:
        raise click.UsageError("--max-eval-cost is for --evaluate")
    if not evaluate:
        return None
    from reconciler.plan.evaluate import EvaluateOptions

    return EvaluateOptions(max_cost_usd=max_eval_cost, notice=lambda text: click.echo(text, err=True))


def guard_options(targets: tuple[str, ...], excludes: tuple[str, ...], allow_mass_delete: bool) -> GuardOptions:
    from reconciler.plan.guards import GuardOptions

    return GuardOptions(tuple(targets), tuple(excludes), allow_mass_delete)


_PLAN_COLOURS = {"  + ": "green", "  ~ ": "yellow", "  - ": "red"}


def echo_plan(text: str) -> None:
    """Print a rendered plan; colours show on a terminal only (click strips them elsewhere)."""
    styles = {prefix: click.style("\0", fg=colour).split("\0") for prefix, colour in _PLAN_COLOURS.items()}  # start, reset
    lines = []
    for line in text.splitlines():
        style = styles.get(line[:4])
        lines.append(f"{style[0]}{line}{style[1]}" if style else line)
    if lines:  # one write: a plan of 10,000 resources took 0.1 s as a write (and a style call) per line
        click.echo("\n".join(lines))
