"""validate, plan, apply, get, history."""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from reconciler.cli import cli
from reconciler.cli.options import (
    db_option,
    echo_plan,
    evaluate_options,
    evaluate_request,
    gitops_options,
    guard_options,
    paths_argument,
    read_engine,
    validation_timeout_option,
)

if TYPE_CHECKING:
    from reconciler.errors import Problem
    from reconciler.plan.model import Plan


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
        raise ReconcilerError([*exc.problems, _count_problem(len(errors))]) from None
    if fmt == "json":
        click.echo(
            json.dumps(
                {
                    "valid": True,
                    "resources": len(manifests.manifests),
                    "files": len(manifests.files),
                    "problems": [p.to_dict() for p in manifests.warnings],
                },
                indent=2,
            )
        )
        return 0
    for w in manifests.warnings:
        click.echo(w.render(), err=True)
    counts: dict[str, int] = {}
    for m in manifests.manifests:
        counts[m.kind] = counts.get(m.kind, 0) + 1
    detail = ", ".join(_counted(n, k.lower()) for k, n in counts.items())
    resources = _counted(len(manifests.manifests), "resource")
    click.echo(f"Valid: {resources} in {_counted(len(manifests.files), 'file')}{f' ({detail})' if detail else ''}.")
    return 0


def _counted(n: int, noun: str) -> str:
    """A count and its noun: 1 file, 2 files (every noun counted here takes an s)."""
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _count_problem(n: int) -> Problem:
    from reconciler.errors import Problem

    return Problem(f"Found {n} error{'s' if n != 1 else ''}; nothing was changed.", severity="summary")


def _git_for(paths: list[str]) -> dict[str, Any] | None:
    from reconciler.gitinfo import describe_checkout

    return describe_checkout(paths)


@cli.command()
@paths_argument
@db_option
@click.option("--out", type=click.Path(dir_okay=False), help="Save the plan to FILE for `reconciler apply FILE`.")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON (same as --format json).")
@click.option("--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text", help="Output format.")
@click.option("--detailed-exitcode", is_flag=True, help="Exit 0 when there are no changes, 2 when there are.")
@click.option("--no-prune", is_flag=True, help="Keep managed resources that are no longer in the manifests.")
@gitops_options
@evaluate_options
def plan(
    paths: tuple[str, ...],
    db: str | None,
    out: str | None,
    as_json: bool,
    fmt: str,
    detailed_exitcode: bool,
    no_prune: bool,
    git_ref: str | None,
    repo: str | None,
    targets: tuple[str, ...],
    excludes: tuple[str, ...],
    allow_mass_delete: bool,
    evaluate: bool,
    max_eval_cost: float | None,
) -> int:
    """Show what apply would change in the database (--evaluate: and in the agents' behaviour)."""
    from reconciler.gcpolicy import no_collection
    from reconciler.gitops.revisions import manifest_source
    from reconciler.plan.render import RENDERERS
    from reconciler.workflow import PlanRequest, plan_from_paths

    with manifest_source(list(paths), git_ref, repo) as src:
        guards = guard_options(targets, excludes, allow_mass_delete)
        request = PlanRequest(src.paths, db, prune=not no_prune, git=src.git, guards=guards, evaluate=evaluate_request(evaluate, max_eval_cost))
        # a batch that builds no garbage cycles, kept until the command ends (--evaluate calls models: collected as usual)
        with contextlib.nullcontext() if evaluate else no_collection():
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
    if the_plan.failed_gates:
        from reconciler.errors import GatesFailed
        from reconciler.plan.behaviour import gate_problems

        raise GatesFailed(gate_problems(the_plan.failed_gates))
    return 2 if detailed_exitcode and not the_plan.is_empty else 0


def _save_plan(the_plan: Plan, out: str) -> None:
    from reconciler.plan.saved import write_saved_plan
    from reconciler.providers.secrets import load_secret_box

    # the key of the database just planned against (created as apply would create it), so the
    # apply job that has that key can check the file was not changed
    write_saved_plan(the_plan, load_secret_box(create=True), out)


def _load_saved_plan(path: str, db: str | None) -> Plan:
    from reconciler.plan.saved import read_saved_plan
    from reconciler.providers.secrets import load_secret_box
    from reconciler.state.db import database_url, plain_sqlite_url

    def box() -> Any:
        plain = plain_sqlite_url(db)  # the file itself: no URL parser (SQLAlchemy's) for a plain SQLite URL
        database = plain[1] if plain is not None else database_url(db)
        return load_secret_box(create=False, needed_for="it checks the saved plan's signature", database=database)

    return read_saved_plan(path, box)


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
@validation_timeout_option("Seconds each provider may take to answer (default 10).", metavar="S")
@click.option(
    "--extend-enums",
    is_flag=True,
    help="Add the values the database's enum columns lack (PostgreSQL ALTER TYPE ... ADD VALUE, recorded in history); "
    "the service owning the database may not read rows with them.",
)
@evaluate_options
@click.option("--ignore-gates", is_flag=True, help="Apply even when an evaluated assignment failed a gate (recorded in the history).")
def apply(
    paths: tuple[str, ...],
    db: str | None,
    auto_approve: bool,
    no_prune: bool,
    lock_timeout: float | None,
    git_ref: str | None,
    repo: str | None,
    targets: tuple[str, ...],
    excludes: tuple[str, ...],
    allow_mass_delete: bool,
    wait_validation: bool,
    no_validate: bool,
    validation_timeout: float,
    extend_enums: bool,
    evaluate: bool,
    max_eval_cost: float | None,
    ignore_gates: bool,
) -> int:
    """Make the database match the manifests (PATH...) or apply a saved plan (FILE)."""
    from reconciler.gcpolicy import no_collection
    from reconciler.plan.render import render_text
    from reconciler.state.lock import DEFAULT_LOCK_TIMEOUT
    from reconciler.workflow import ApplyHooks, ApplyRequest, apply_manifests, apply_saved_plan

    if wait_validation and no_validate:
        raise click.UsageError("--wait-validation and --no-validate exclude each other")
    timeout = DEFAULT_LOCK_TIMEOUT if lock_timeout is None else lock_timeout
    request = ApplyRequest(
        list(paths),
        db,
        prune=not no_prune,
        guards=guard_options(targets, excludes, allow_mass_delete),
        lock_timeout=timeout,
        validate_providers=not no_validate,
        validation_timeout=validation_timeout,
        wait_validation=wait_validation,
        extend_enums=extend_enums,
        evaluate=evaluate_request(evaluate, max_eval_cost),
        ignore_gates=ignore_gates,
    )
    # a batch that builds no garbage cycles up to the commit, kept until the command ends (--evaluate
    # calls models: collected as usual); 19 young collections took 0.07 s of a first apply of 10,000
    batch = contextlib.nullcontext if evaluate else no_collection
    show = ApplyHooks(show_plan=lambda p: echo_plan(render_text(p)), start_runs=_start_runs, batch=batch)
    if _is_saved_plan(paths) and git_ref is None:
        if repo or targets or excludes or allow_mass_delete or evaluate:
            from reconciler.errors import ReconcilerError

            raise ReconcilerError(
                "a saved plan is applied exactly as it was made; --repo, --target, --exclude, --allow-mass-delete and --evaluate do not apply "
                "(a plan made with --evaluate keeps its evaluation)",
                hint="pass them to `reconciler plan ... --out FILE` instead",
            )
        outcome = apply_saved_plan(_load_saved_plan(paths[0], db), replace(request, command="apply-plan"), show)
    else:
        from reconciler.gitops.revisions import manifest_source

        with manifest_source(list(paths), git_ref, repo) as src:  # --git-ref: a temporary copy
            hooks = replace(
                show,
                relocate=src.relocate_plan,
                warnings=lambda problems: _echo_problems(src.relocate_problem(w) for w in problems),
                confirm=lambda plan: _confirm(auto_approve),
            )
            outcome = apply_manifests(replace(request, paths=src.paths, sources=src.display, git=src.git), hooks)
        if not outcome.applied and outcome.plan.is_empty:
            return 0
    return _report_apply(outcome, wait_validation)


def _echo_problems(problems: Any) -> None:
    for p in problems:
        click.echo(p.render(), err=True)


def _start_runs(engine: Any, names: tuple[str, ...]) -> tuple[Any, ...]:
    from reconciler.cli.runs import start_triggered_runs

    return start_triggered_runs(engine, names)


def _report_apply(outcome: Any, wait_validation: bool) -> int:
    """What happened after the plan: the apply, the providers' validation, the on_apply runs."""
    from reconciler.errors import ReconcilerError

    result = outcome.result
    for e in result.extended if result is not None else ():
        click.echo(f"Extended the enum {e.enum} ({e.table}.{e.column}) with {', '.join(repr(v) for v in e.missing)}.")
    if result is None or result.apply_id is None:
        click.echo("Nothing to apply.")
    else:
        click.echo(f"Apply complete (#{result.apply_id}): {result.created} created, {result.updated} updated, {result.deleted} deleted.")
    for problem in outcome.problems:
        click.echo(problem.render(), err=True)
    if outcome.validations:
        from reconciler.cli.providers import describe_validation

        n = len(outcome.validations)
        click.echo(f"Validated {n} provider{'s' if n != 1 else ''}:")
        for r in outcome.validations:
            click.echo(f"  {r.name}: {describe_validation(r)}")
        failed = [r.name for r in outcome.validations if not r.ok]
        if failed and wait_validation:
            raise ReconcilerError(
                f"the apply succeeded, but {len(failed)} provider{'s' if len(failed) != 1 else ''} failed validation: {', '.join(failed)}",
                hint="fix the provider and apply again, or re-check with `reconciler providers check`",
            )
    for check in outcome.missing_models:
        click.echo(f"warning: {check.message()}\n  hint: {check.hint()}", err=True)
    if outcome.missing_models and wait_validation:
        names = [c.agent for c in outcome.missing_models]
        raise ReconcilerError(
            f"the apply succeeded, but {len(names)} agent{'s' if len(names) != 1 else ''} use a model their provider does not serve: "
            + ", ".join(names),
            hint="fix each agent's model_name (see the warnings above) and apply again",
        )
    return 1 if any(run.failed for run in outcome.runs) else 0


@cli.command()
@click.argument("kind", metavar="KIND")
@click.argument("name", required=False)
@db_option
@click.option("-o", "--output", "fmt", type=click.Choice(["table", "json", "yaml"]), default="table")
def get(kind: str, name: str | None, db: str | None, fmt: str) -> int:
    """List the resources of one KIND (e.g. providers, agents, tasks, assignments) as stored in the database."""
    from reconciler.errors import ReconcilerError
    from reconciler.kinds import ALIASES
    from reconciler.state.db import translate_db_errors
    from reconciler.state.queries import list_resources

    if kind.lower() not in ALIASES:
        raise click.BadParameter(f"{kind!r} is not one of {', '.join(sorted(ALIASES))}.", param_hint="'KIND'")
    k = ALIASES[kind.lower()]
    what = k.plural
    engine = read_engine(db)
    if engine is not None:
        with translate_db_errors(engine.url, f"listing {what}"):
            rows = list_resources(engine, what, name)
            if what == "agents":
                from reconciler.providers.model_check import with_model_status

                rows = with_model_status(engine, rows)
            elif what == "assignments":
                from reconciler.plan.evaluate import with_last_evaluation

                rows = with_last_evaluation(engine, rows)
    else:
        rows = []
    if name is not None and not rows:
        raise ReconcilerError(f"no {what[:-1]} named {name!r} in the database", hint=f"list them with `reconciler get {what}`")
    from reconciler.cli.output import emit_rows

    columns = list(k.get_columns) + (["accuracy", "measured_at"] if what == "assignments" else [])
    emit_rows(rows, fmt, columns)
    return 0


@cli.command()
@db_option
@click.option("-n", "--limit", type=click.IntRange(1), default=20, help="How many applies to show.")
@click.option("-o", "--output", "fmt", type=click.Choice(["table", "json", "yaml"]), default="table")
def history(db: str | None, limit: int, fmt: str) -> int:
    """List past applies: when, who, which commit, what changed."""
    from reconciler.cli.output import emit_rows
    from reconciler.state.db import translate_db_errors
    from reconciler.state.queries import list_history

    engine = read_engine(db)
    rows = []
    if engine is not None:
        with translate_db_errors(engine.url, "reading history"):
            rows = list_history(engine, limit, plans=fmt != "table")
    if fmt == "table":
        for r in rows:
            commit = (r["git_commit"] or "")[:10] + ("+dirty" if r["git_dirty"] else "") if r["git_commit"] else None
            r["commit"] = commit
            r["changes"] = f"+{r['created']} ~{r['updated']} -{r['deleted']}"
        emit_rows(rows, fmt, ["id", "finished_at", "user", "command", "commit", "git_author", "git_subject", "changes"])
    else:
        emit_rows(rows, fmt, [])
    return 0
