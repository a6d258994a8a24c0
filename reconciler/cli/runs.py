"""run, runs list/show/results, test: the execution side. Implementations are imported inside each
command, so plan/apply/validate never import pydantic-ai."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

import click

from reconciler.cli import cli
from reconciler.cli.options import db_option, listing_option, read_engine


def _engine(db: str | None, create: bool = False) -> Any:
    from reconciler.errors import ReconcilerError
    from reconciler.state.db import open_engine

    engine = open_engine(db, create=create)
    if engine is None:
        raise ReconcilerError("no state database yet", hint="apply manifests first: reconciler apply PATH")
    return engine


def _short(value: Any, limit: int = 48) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Progress:
    """A progress bar on a terminal (stderr), JSON lines with --json, else nothing until the end."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.bar: Any = None
        self.interactive = not as_json and sys.stderr.isatty()

    def start(self, todo: int, total: int) -> None:
        if self.as_json:
            click.echo(json.dumps({"event": "start", "items": total, "todo": todo}))
        elif self.interactive and todo:
            self.bar = click.progressbar(length=todo, label=f"{todo} of {total} items", file=sys.stderr, show_pos=True, show_eta=True)
            self.bar.__enter__()

    def experiment_item(self, agent: str, outcome: Any) -> None:
        self.item(outcome, agent)

    def item(self, outcome: Any, agent: str | None = None) -> None:
        if self.as_json:
            extra = {"transient": True} if outcome.transient else {}  # not stored: the item stays unfinished
            shown = {"event": "item", **({"agent": agent} if agent is not None else {}), **outcome.row(), **extra}
            click.echo(json.dumps(shown, default=str, ensure_ascii=False))
        elif self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _is_file(target: str) -> bool:
    p = Path(target)
    return p.suffix.lower() in {".yaml", ".yml"} or p.is_file()


def _report(engine: Any, summary: Any, *, as_json: bool, table: bool) -> None:
    if as_json:
        click.echo(json.dumps({"event": "run", **summary.to_dict()}, default=str))
        return
    if table:
        _print_results(engine, summary.name, "table")
    click.echo(f"Run {summary.name}: {summary.describe()}")
    if summary.error:
        click.echo(f"  {summary.error}", err=True)


def execute_named(
    engine: Any,
    names: list[str],
    *,
    as_json: bool,
    concurrency: int | None = None,
    retry_failed: bool = False,
    table: bool = True,
    use_cache: bool = True,
    max_consecutive_failures: int | None = None,
) -> int:
    """Run each of ``names``; the exit code is the worst of theirs (see ``runs.outcome.exit_code``)."""
    from reconciler.runs.outcome import Outcome, exit_code, failed_items_exit_code, outcome_of
    from reconciler.runs.service import RunOptions, execute_run, runnable_kind

    failed_code = failed_items_exit_code()  # a bad setting is an error before anything runs
    options = RunOptions(concurrency, retry_failed, use_cache=use_cache)
    if max_consecutive_failures is not None:
        options = RunOptions(concurrency, retry_failed, use_cache=use_cache, max_consecutive_failures=max_consecutive_failures)
    outcomes = []
    for target in names:
        kind, name = runnable_kind(engine, target)
        progress = _Progress(as_json)
        try:
            if kind == "Experiment":
                from reconciler.runs.experiment import execute_experiment

                result: Any = execute_experiment(engine, name, options, on_item=progress.experiment_item, on_start=progress.start)
            else:
                result = execute_run(engine, name, options, on_item=progress.item, on_start=progress.start)
        finally:
            progress.close()
        (_report_experiment if kind == "Experiment" else _report)(engine, result, as_json=as_json, table=table)
        outcomes.append(outcome_of(result.items_failed, result.items_unfinished))
    return exit_code(outcomes or [Outcome.OK], failed_code)


def _report_experiment(engine: Any, summary: Any, *, as_json: bool, table: bool) -> None:
    if as_json:
        click.echo(json.dumps({"event": "experiment", **summary.to_dict()}, default=str))
        return
    if table:
        from reconciler.cli.experiments import report_after_run

        report_after_run(engine, summary.name)
    else:
        for arm in summary.arms:
            click.echo(f"Experiment {summary.name}, agent {arm.name}: {arm.describe()}")
    if summary.error:
        click.echo(f"  {summary.error}", err=True)


@cli.command("run")
@click.argument("target", metavar="NAME|KIND/NAME|FILE")
@db_option
@click.option("--concurrency", type=click.IntRange(1, 256), help="Override the run's concurrency (with --distribute: per worker).")
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Also redo items whose answers were invalid (items that got only transient errors are always retried).",
)
@click.option(
    "--max-consecutive-failures",
    type=click.IntRange(1),
    default=None,
    metavar="N",
    help="Pause the run after N transient failures in a row across items (provider down; default 5).",
)
@click.option("--json", "as_json", is_flag=True, help="JSON lines: one per item, then the run summary.")
@click.option("--no-table", is_flag=True, help="Print only the summary, not the results table.")
@click.option("--no-cache", is_flag=True, help="Call the model for every item instead of reusing cached answers.")
@click.option(
    "--distribute",
    is_flag=True,
    help="Queue the unfinished items in chunks for `reconciler worker` processes (PostgreSQL) and return.",
)
@click.option(
    "--wait",
    "wait",
    is_flag=True,
    help="With --distribute: follow the progress until the run is finished, and exit as `run` does.",
)
@click.option(
    "--chunk-size",
    type=click.IntRange(1, 100_000),
    help="With --distribute: items per chunk (default: about 64 chunks, of at most 100 items and at least 4 x the concurrency).",
)
@click.option(
    "--queue",
    "queue_name",
    default="runs",
    show_default=True,
    metavar="NAME",
    help="With --distribute: the queue the chunks go to (`reconciler worker --queues`).",
)
def run_command(
    target: str,
    db: str | None,
    concurrency: int | None,
    retry_failed: bool,
    max_consecutive_failures: int | None,
    as_json: bool,
    no_table: bool,
    no_cache: bool,
    distribute: bool,
    wait: bool,
    chunk_size: int | None,
    queue_name: str,
) -> int:
    """Execute (or resume) a run or an experiment by name (run/NAME or experiment/NAME when both
    kinds have one of that name), or the Run and Experiment manifests in FILE (applied first); with
    --distribute, hand a run's (or an experiment's) items to workers on any host that share the
    PostgreSQL database.

    Exit status: 0 when every item is valid, 1 for an error (a bad manifest, a run that could not
    start, or one left interrupted with items unfinished: an unreachable provider, Ctrl-C), 100 when
    every item finished and some failed ($RECONCILER_FAILED_ITEMS_EXIT_CODE chooses another)."""
    if (wait or chunk_size is not None or queue_name != "runs") and not distribute:
        raise click.UsageError("--wait, --chunk-size and --queue go with --distribute")
    if distribute:
        from reconciler.runs.distributed.store import require_postgres
        from reconciler.state.db import database_url

        require_postgres(database_url(db), "run --distribute")  # before anything is written
    if _is_file(target):
        from reconciler.workflow import ApplyRequest, apply_manifests

        # the Run manifests are applied first, like any apply (lock, guard rails, history)
        request = ApplyRequest(
            [target],
            db,
            prune=False,
            command="run",
            only_kind=("Run", "Experiment"),
            external_refs=True,
            validate_providers=False,
            start_runs=False,
        )
        outcome = apply_manifests(request)
        found = outcome.manifests.manifests if outcome.manifests is not None else ()
        names = [m.name if m.kind == "Run" else f"{m.kind.lower()}/{m.name}" for m in found]
        engine = _engine(db, create=distribute)
    else:
        engine = _engine(db, create=distribute)  # distributing migrates a database from before the task queue
        names = [target]
    if distribute:
        from reconciler.runs.distributed.enqueue import DistributeOptions

        options = DistributeOptions(chunk_size, queue_name, concurrency, retry_failed, max_consecutive_failures, use_cache=not no_cache)
        return distribute_named(engine, names, options, as_json=as_json, wait=wait, table=not no_table)
    return execute_named(
        engine,
        names,
        as_json=as_json,
        concurrency=concurrency,
        retry_failed=retry_failed,
        table=not no_table,
        use_cache=not no_cache,
        max_consecutive_failures=max_consecutive_failures,
    )


class _Following:
    """Progress of a distributed run: a bar on a terminal, JSON lines with --json, else nothing."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.bar: Any = None
        self.done = -1
        self.last: tuple[int, int] = (-1, -1)

    def __call__(self, finished: int, total: int, shown: Any) -> None:
        if self.as_json:
            state = (finished, shown.open)
            if state != self.last:
                self.last = state
                shown_now = {"event": "progress", "finished": finished, "items": total, "chunks": shown.by_state, "workers": len(shown.workers)}
                click.echo(json.dumps(shown_now))
            return
        if not sys.stderr.isatty():
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label=f"{total} items", file=sys.stderr, show_pos=True, show_eta=True)
            self.bar.__enter__()
            self.done = 0
        self.bar.update(finished - self.done)
        self.done = finished

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def distribute_named(engine: Any, names: list[str], options: Any, *, as_json: bool, wait: bool, table: bool) -> int:
    from reconciler.runs.distributed.enqueue import distribute_experiment, distribute_run
    from reconciler.runs.distributed.finish import follow, follow_experiment
    from reconciler.runs.service import runnable_kind

    targets = [runnable_kind(engine, target) for target in names]  # every target checked before any is distributed
    done = [(distribute_experiment if kind == "Experiment" else distribute_run)(engine, name, options) for kind, name in targets]
    for d in done:
        if as_json:
            click.echo(json.dumps({"event": "distributed", **d.__dict__}, default=str))
        else:
            click.echo(f"{d.kind} {d.name}: {d.describe()}")
    if not wait:
        if not as_json and any(d.chunks for d in done):
            click.echo(
                "  workers on any host take the chunks: reconciler worker --db URL; follow it: reconciler runs show NAME "
                "(experiments: reconciler experiments show NAME), or run it with --distribute --wait",
                err=True,
            )
        return 0
    from reconciler.runs.outcome import Outcome, exit_code, failed_items_exit_code, outcome_of

    failed_code = failed_items_exit_code()
    outcomes = []
    for d in done:
        following = _Following(as_json)
        try:
            result: Any = (follow_experiment if d.kind == "Experiment" else follow)(engine, d.name, following)
        except KeyboardInterrupt:
            following.close()
            show = "experiments show" if d.kind == "Experiment" else "runs show"
            click.echo(f"{d.kind} {d.name}: still running on the workers; follow it with `reconciler {show} {d.name}`", err=True)
            return 130
        finally:
            following.close()
        (_report_experiment if d.kind == "Experiment" else _report)(engine, result, as_json=as_json, table=table)
        outcomes.append(outcome_of(result.items_failed, result.items_unfinished))
    return exit_code(outcomes or [Outcome.OK], failed_code)


def start_triggered_runs(db_engine: Any, names: tuple[str, ...]) -> tuple[Any, ...]:
    """Called by `apply` for runs with trigger: on_apply (`watch` starts them through the same
    ``start_triggered_run``); one run that cannot start does not keep the others from starting."""
    from reconciler.runs.triggered import start_triggered_run

    click.echo(f"Starting {len(names)} run{'s' if len(names) != 1 else ''} with trigger: on_apply: {', '.join(names)}")
    outcomes = []
    for name in names:
        progress = _Progress(False)
        try:
            outcome = start_triggered_run(db_engine, name, on_item=progress.item, on_start=progress.start)
        finally:
            progress.close()
        if outcome.summary is not None and hasattr(outcome.summary, "arms"):
            _report_experiment(db_engine, outcome.summary, as_json=False, table=True)
        elif outcome.summary is not None:
            _report(db_engine, outcome.summary, as_json=False, table=True)
        elif outcome.skipped:
            click.echo(f"Run {name}: not started: {outcome.skipped}")
        for problem in outcome.problems:
            click.echo(problem.render(), err=True)
        outcomes.append(outcome)
    return tuple(outcomes)


@cli.group("runs")
def runs_group() -> None:
    """List runs, show one with its config snapshot, print its results."""


@runs_group.command("list")
@db_option
@listing_option
def runs_list(db: str | None, fmt: str) -> int:
    """Every run: status, counts, tokens, cost, accuracy."""
    from reconciler.cli.output import emit_batch_rows
    from reconciler.runs.views import run_rows

    columns = ["name", "status", "items", "succeeded", "failed", "accuracy", "tokens", "cost_usd", "elapsed_s", "config", "started_at"]
    emit_batch_rows(run_rows(read_engine(db)), fmt, columns)
    return 0


@runs_group.command("show")
@click.argument("name")
@db_option
@click.option("-o", "--output", "fmt", type=click.Choice(["text", "json", "yaml"]), default="text")
def runs_show(name: str, db: str | None, fmt: str) -> int:
    """One run: status, counters, timestamps and its configuration snapshot (with SHA-256)."""
    from reconciler.runs.views import run_detail

    detail = run_detail(_engine(db), name)
    if fmt == "json":
        click.echo(json.dumps(detail, indent=2, default=str, ensure_ascii=False))
    elif fmt == "yaml":
        import yaml

        click.echo(yaml.safe_dump(json.loads(json.dumps(detail, default=str)), sort_keys=False, allow_unicode=True), nl=False)
    else:
        for key, value in detail.items():
            if key in {"config_snapshot", "spec", "chunks", "workers"}:
                continue
            click.echo(f"{key + ':':<18}{'-' if value is None else value}")
        if "chunks" in detail:
            print_distribution(detail)
        click.echo("spec:")
        click.echo("  " + json.dumps(detail["spec"], indent=2, ensure_ascii=False).replace("\n", "\n  "))
        click.echo("config_snapshot:")
        click.echo("  " + json.dumps(detail["config_snapshot"], indent=2, ensure_ascii=False, sort_keys=True).replace("\n", "\n  "))
    return 0


def print_distribution(detail: dict[str, Any]) -> None:
    """A distributed run's chunks by state and its workers, summed over every host."""
    from reconciler.cli.output import format_table

    chunks = detail["chunks"]
    states = ", ".join(f"{chunks[s]} {s}" for s in ("queued", "running", "done", "stopped") if chunks[s])
    click.echo(f"{'chunks:':<18}{chunks['total']} ({states or 'none'})")
    if not detail["workers"]:
        click.echo(f"{'workers:':<18}none yet")
        return
    rows = [{**w, "chunks_running": ", ".join(str(c) for c in w["chunks_running"]) or None} for w in detail["workers"]]
    click.echo("workers:")
    table = format_table(rows, ["host", "pid", "items", "chunks_running", "last_result_at"])
    click.echo("  " + table.replace("\n", "\n  "))


def _print_results(engine: Any, name: str, fmt: str) -> None:
    from reconciler.cli.output import format_table
    from reconciler.runs.views import result_rows

    rows, expected = result_rows(engine, name)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, default=str, ensure_ascii=False))
        return
    if fmt == "csv":
        buf = io.StringIO()
        fields = ["item", "input", "output", "valid", "expected", "correct", "error", "attempts", "input_tokens", "output_tokens", "latency_ms"]
        writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({**r, "input": json.dumps(r["input"], ensure_ascii=False), "output": json.dumps(r["output"], ensure_ascii=False)})
        click.echo(buf.getvalue(), nl=False)
        return
    shown = [
        {
            "#": r["item"],
            "input": _short(r["prompt"]),
            "output": _short(r["output"] if r["valid"] else r["error"], 56),
            "valid": r["valid"],
            **({"expected": r["expected"], "ok": "✓" if r["correct"] else "✗"} if expected else {}),
            "tries": r["attempts"],
            "ms": f"{r['latency_ms']:.0f}" if r["latency_ms"] is not None else None,
        }
        for r in rows
    ]
    columns = ["#", "input", "output", "valid", *(["expected", "ok"] if expected else []), "tries", "ms"]
    click.echo(format_table(shown, columns) if shown else "No results yet.")


@runs_group.command("results")
@click.argument("name")
@db_option
@click.option("-o", "--output", "fmt", type=click.Choice(["table", "json", "csv"]), default="table")
def runs_results(name: str, db: str | None, fmt: str) -> int:
    """One row per input: output, valid, error, attempts, tokens, latency."""
    _print_results(_engine(db), name, fmt)
    return 0


@cli.command("test")
@click.argument("agent")
@click.option("--prompt", required=True, help="The prompt to send.")
@click.option("--task", help="Check the answer against this task's response schema (default: the agent's only task).")
@click.option("--no-task", is_flag=True, help="Ask for a plain-text answer, checked against nothing.")
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print the response as JSON (as the seed's test endpoint).")
def test_command(agent: str, prompt: str, task: str | None, no_task: bool, db: str | None, as_json: bool) -> int:
    """Send one prompt to an agent: response, elapsed time, model, provider, task."""
    from reconciler.runs.one_prompt import TaskRequest, send_prompt

    if task and no_task:
        raise click.UsageError("--task and --no-task exclude each other")
    result = send_prompt(_engine(db), agent, prompt, TaskRequest(task, no_task))
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str, ensure_ascii=False))
    else:
        click.echo(result["response"])
        chosen = {"given": f"task {result['task_name']}", "only": f"task {result['task_name']} (the agent's only task)"}
        click.echo(
            f"elapsed {result['elapsed_time']:.2f} s · model {result['model_name']} · provider {result['provider_name']} ({result['provider_type']})"
            + f" · {chosen.get(result['task_choice'], 'plain text, no task')}",
            err=True,
        )
    return 0
