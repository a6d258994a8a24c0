"""validate, plan, apply, get, history."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import click

from reconciler.cli import cli

db_option = click.option(
    "--db",
    envvar="RECONCILER_DATABASE_URL",
    metavar="URL",
    help="State database (default: sqlite .reconciler/state.db; env RECONCILER_DATABASE_URL).",
)
paths_argument = click.argument("paths", nargs=-1, required=True, type=click.Path())


@cli.command()
@paths_argument
@click.option("-o", "--output", "fmt", type=click.Choice(["text", "json"]), default="text", help="Output format.")
def validate(paths: tuple[str, ...], fmt: str) -> int:
    """Check manifests without a database or network; report every problem at once."""
    from reconciler.errors import ReconcilerError
    from reconciler.manifests.loader import load_manifests

    try:
        manifests = load_manifests(list(paths))
    except ReconcilerError as exc:
        if fmt == "json":
            click.echo(json.dumps({"valid": False, "problems": [p.to_dict() for p in exc.problems]}, indent=2))
            return 1
        errors = [p for p in exc.problems if p.severity == "error"]
        raise ReconcilerError(exc.problems + [_count_problem(len(errors))]) from None
    if fmt == "json":
        click.echo(json.dumps({"valid": True, "resources": len(manifests.manifests), "files": len(manifests.files), "problems": [p.to_dict() for p in manifests.warnings]}, indent=2))
        return 0
    for w in manifests.warnings:
        click.echo(w.render(), err=True)
    counts: dict[str, int] = {}
    for m in manifests.manifests:
        counts[m.kind] = counts.get(m.kind, 0) + 1
    detail = ", ".join(f"{n} {k.lower()}{'s' if n != 1 else ''}" for k, n in counts.items())
    click.echo(f"Valid: {len(manifests.manifests)} resources in {len(manifests.files)} files ({detail}).")
    return 0


_PLAN_COLOURS = {"  + ": "green", "  ~ ": "yellow", "  - ": "red"}


def echo_plan(text: str) -> None:
    """Print a rendered plan; colours show on a terminal only (click strips them elsewhere)."""
    for line in text.splitlines():
        colour = _PLAN_COLOURS.get(line[:4])
        click.echo(click.style(line, fg=colour) if colour else line)


def _count_problem(n: int):  # type: ignore[no-untyped-def]
    from reconciler.errors import Problem

    return Problem(f"Found {n} error{'s' if n != 1 else ''}; nothing was changed.", severity="summary")


def _git_for(paths: list[str]) -> dict[str, Any] | None:
    from reconciler.gitinfo import describe_checkout

    return describe_checkout(paths)


def gitops_options(f: Any) -> Any:
    """--git-ref/--repo (manifests as of a commit) and the guard rails, shared by plan and apply."""
    for option in reversed(
        [
            click.option("--git-ref", metavar="REF", help="Read the manifests as of this commit/branch/tag (no checkout); PATH is then relative to the repository root."),
            click.option("--repo", metavar="PATH", help="The git repository for --git-ref (default: the one holding the current directory)."),
            click.option("--target", "targets", multiple=True, metavar="KIND/NAME", help="Only plan these resources (repeatable; NAME may be a glob)."),
            click.option("--exclude", "excludes", multiple=True, metavar="KIND/NAME", help="Leave these resources out of the plan (repeatable)."),
            click.option("--allow-mass-delete", is_flag=True, help="Allow a plan that deletes more than half of the managed resources."),
        ]
    ):
        f = option(f)
    return f


def _guards(targets: tuple[str, ...], excludes: tuple[str, ...], allow_mass_delete: bool):  # type: ignore[no-untyped-def]
    from reconciler.gitops.guards import GuardOptions

    return GuardOptions(tuple(targets), tuple(excludes), allow_mass_delete)


@cli.command()
@paths_argument
@db_option
@click.option("--out", type=click.Path(dir_okay=False), help="Save the plan to FILE for `reconciler apply FILE`.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (same as --format json).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text", help="Output format.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0 when there are no changes, 2 when there are.")
@click.option("--no-prune", is_flag=True, help="Keep managed resources that are no longer in the manifests.")
@gitops_options
def plan(
    paths: tuple[str, ...], db: str | None, out: str | None, as_json: bool, fmt: str, detailed_exitcode: bool, no_prune: bool,
    git_ref: str | None, repo: str | None, targets: tuple[str, ...], excludes: tuple[str, ...], allow_mass_delete: bool,
) -> int:
    """Show what apply would change in the database."""
    from reconciler.gitops.revisions import manifest_source
    from reconciler.plan.render import RENDERERS
    from reconciler.workflow import PlanRequest, plan_from_paths

    with manifest_source(list(paths), git_ref, repo) as src:
        request = PlanRequest(src.paths, db, prune=not no_prune, git=src.git, guards=_guards(targets, excludes, allow_mass_delete))
        the_plan, manifests = plan_from_paths(request)
        the_plan = src.relocate_plan(the_plan)
        for w in manifests.warnings:
            click.echo(src.relocate_problem(w).render(), err=True)
    if out:
        _save_plan(the_plan, out)
    rendered = RENDERERS["json" if as_json else fmt](the_plan)
    if fmt == "text" and not as_json:
        echo_plan(rendered)
    else:
        click.echo(rendered, nl=False)
    if out and not as_json and fmt == "text":
        click.echo(f"Saved the plan to {out}. Apply exactly this plan with: reconciler apply {out}")
    return 2 if detailed_exitcode and not the_plan.is_empty else 0


def _save_plan(the_plan: Any, out: str) -> None:
    from reconciler.errors import ReconcilerError
    from reconciler.plan.render import render_json

    try:
        Path(out).write_text(render_json(the_plan), encoding="utf-8")
    except OSError as exc:
        raise ReconcilerError(f"cannot write plan file {out}: {exc.strerror}") from None


def _load_saved_plan(path: str):  # type: ignore[no-untyped-def]
    from reconciler.errors import Location, Problem, ReconcilerError
    from reconciler.plan.model import Plan

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return Plan.from_dict(data)
    except (OSError, UnicodeDecodeError) as exc:
        raise ReconcilerError(Problem(f"cannot read saved plan: {exc}", Location(path))) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ReconcilerError(
            Problem(f"not a saved reconciler plan: {exc}", Location(path), hint="create one with `reconciler plan PATH --out FILE`")
        ) from None


def _is_saved_plan(paths: tuple[str, ...]) -> bool:
    if len(paths) != 1:
        return False
    p = Path(paths[0])
    return p.is_file() and p.suffix.lower() not in {".yaml", ".yml"}


def _confirm(auto_approve: bool) -> None:
    from reconciler.errors import ReconcilerError

    if auto_approve:
        return
    if not sys.stdin.isatty():
        raise ReconcilerError(
            "refusing to apply without confirmation: there is no terminal to ask on",
            hint="review the plan above and pass --auto-approve (as CI pipelines do)",
        )
    click.confirm("Apply these changes?", abort=True)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@db_option
@click.option("--auto-approve", is_flag=True, help="Apply without asking for confirmation.")
@click.option("--no-prune", is_flag=True, help="Keep managed resources that are no longer in the manifests.")
@click.option("--lock-timeout", type=float, default=None, help="Seconds to wait for another apply to finish (default 60).")
@gitops_options
@click.option("--wait-validation", is_flag=True, help="Exit 1 if a created or changed provider fails validation (for CI).")
@click.option("--no-validate", is_flag=True, help="Do not validate created or changed providers after the apply.")
@click.option("--validation-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0, metavar="S", help="Seconds each provider may take to answer (default 10).")
def apply(
    paths: tuple[str, ...], db: str | None, auto_approve: bool, no_prune: bool, lock_timeout: float | None,
    git_ref: str | None, repo: str | None, targets: tuple[str, ...], excludes: tuple[str, ...], allow_mass_delete: bool,
    wait_validation: bool, no_validate: bool, validation_timeout: float,
) -> int:
    """Make the database match the manifests (PATH...) or apply a saved plan (FILE)."""
    from reconciler.manifests.loader import load_manifests
    from reconciler.plan.render import render_text
    from reconciler.state.db import database_url, open_engine, translate_db_errors
    from reconciler.state.lock import DEFAULT_LOCK_TIMEOUT, apply_lock
    from reconciler.state.snapshot import load_snapshot
    from reconciler.workflow import apply_meta, compute_plan, open_for_apply, run_apply

    if wait_validation and no_validate:
        raise click.UsageError("--wait-validation and --no-validate exclude each other")
    timeout = DEFAULT_LOCK_TIMEOUT if lock_timeout is None else lock_timeout
    if _is_saved_plan(paths) and git_ref is None:
        if repo or targets or excludes or allow_mass_delete:
            from reconciler.errors import ReconcilerError

            raise ReconcilerError(
                "a saved plan is applied exactly as it was made; --repo, --target, --exclude and --allow-mass-delete do not apply",
                hint="pass them to `reconciler plan ... --out FILE` instead",
            )
        saved = _load_saved_plan(paths[0])
        engine = open_for_apply(db)
        with apply_lock(engine, timeout):
            echo_plan(render_text(saved))
            result = run_apply(engine, saved, apply_meta("apply-plan", list(saved.sources), saved.git))
    else:
        from reconciler.gitops.revisions import manifest_source

        with contextlib.ExitStack() as held:
            src = held.enter_context(manifest_source(list(paths), git_ref, repo))  # --git-ref: a temporary copy
            manifests = load_manifests(src.paths)  # bad input stops here, before the database is touched
            for w in manifests.warnings:
                click.echo(src.relocate_problem(w).render(), err=True)
            git = src.git
            existing = open_engine(db, create=False)
            # The schema is created or migrated only once the plan is confirmed; the fingerprint check
            # inside the apply transaction catches anyone who changed the database meanwhile.
            if existing is not None:
                held.enter_context(apply_lock(existing, timeout))
            with translate_db_errors(database_url(db), "reading the current state"):
                snapshot = load_snapshot(existing)
            guards = _guards(targets, excludes, allow_mass_delete)
            the_plan = compute_plan(manifests, snapshot, prune=not no_prune, sources=src.display, git=git, guards=guards)
            the_plan = src.relocate_plan(the_plan)
            echo_plan(render_text(the_plan))
            if the_plan.is_empty:
                return 0
            _confirm(auto_approve)
            engine = open_for_apply(db)
            if existing is None:
                held.enter_context(apply_lock(engine, timeout))
            result = run_apply(engine, the_plan, apply_meta("apply", src.display, git))
    if result.apply_id is None:
        click.echo("Nothing to apply.")
    else:
        click.echo(
            f"Apply complete (#{result.apply_id}): {result.created} created, {result.updated} updated, {result.deleted} deleted."
        )
    code = 0
    if result.changed_providers and not no_validate:  # after the commit: a failed probe never undoes the apply
        from reconciler.cli.providers import validate_after_apply

        code = validate_after_apply(engine, result.changed_providers, wait=wait_validation, timeout=validation_timeout)
    if result.runs_to_start:  # trigger: on_apply, started after the lock is released
        from reconciler.cli.runs import start_triggered_runs

        code = max(code, start_triggered_runs(engine, result.runs_to_start))
    return code


_GET_COLUMNS = {
    "providers": ["name", "type", "base_url", "is_active", "validation_status", "validated_at", "validation_error", "managed"],
    "agents": ["name", "provider", "model_name", "temperature", "max_tokens", "is_active", "managed"],
    "tasks": ["name", "description", "is_active", "managed"],
    "assignments": ["name", "agent_name", "task_name", "provider_name", "provider_type", "is_active", "managed"],
}
_KIND_ALIASES = {
    "provider": "providers", "providers": "providers", "agent": "agents", "agents": "agents",
    "task": "tasks", "tasks": "tasks", "assignment": "assignments", "assignments": "assignments",
}


@cli.command()
@click.argument("kind", type=click.Choice(sorted(_KIND_ALIASES), case_sensitive=False), metavar="KIND")
@click.argument("name", required=False)
@db_option
@click.option("-o", "--output", "fmt", type=click.Choice(["table", "json", "yaml"]), default="table")
def get(kind: str, name: str | None, db: str | None, fmt: str) -> int:
    """List providers, agents, tasks or assignments as stored in the database."""
    from reconciler.errors import ReconcilerError
    from reconciler.state.db import open_engine, translate_db_errors
    from reconciler.state.queries import list_resources

    what = _KIND_ALIASES[kind.lower()]
    engine = open_engine(db, create=False)
    if engine is not None:
        with translate_db_errors(engine.url, f"listing {what}"):
            rows = list_resources(engine, what, name)
    else:
        rows = []
    if name is not None and not rows:
        raise ReconcilerError(f"no {what[:-1]} named {name!r} in the database", hint=f"list them with `reconciler get {what}`")
    from reconciler.cli.output import emit_rows

    emit_rows(rows, fmt, _GET_COLUMNS[what])
    return 0


@cli.command()
@db_option
@click.option("-n", "--limit", type=click.IntRange(1), default=20, help="How many applies to show.")
@click.option("-o", "--output", "fmt", type=click.Choice(["table", "json", "yaml"]), default="table")
def history(db: str | None, limit: int, fmt: str) -> int:
    """List past applies: when, who, which commit, what changed."""
    from reconciler.cli.output import emit_rows
    from reconciler.state.db import open_engine, translate_db_errors
    from reconciler.state.queries import list_history

    engine = open_engine(db, create=False)
    rows = []
    if engine is not None:
        with translate_db_errors(engine.url, "reading history"):
            rows = list_history(engine, limit)
    if fmt == "table":
        for r in rows:
            commit = (r["git_commit"] or "")[:10] + ("+dirty" if r["git_dirty"] else "") if r["git_commit"] else None
            r["commit"] = commit
            r["changes"] = f"+{r['created']} ~{r['updated']} -{r['deleted']}"
        emit_rows(rows, fmt, ["id", "finished_at", "user", "command", "commit", "git_author", "git_subject", "changes"])
    else:
        emit_rows(rows, fmt, [])
    return 0
