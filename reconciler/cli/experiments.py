"""experiments list/show: reports of experiments (`reconciler run NAME` runs them, see cli/runs.py)."""

from __future__ import annotations

import json
from typing import Any

import click

from reconciler.cli import cli
from reconciler.cli.options import db_option, listing_option, read_engine


@cli.group("experiments")
def experiments_group() -> None:
    """List experiments; show one's report (accuracy with intervals, McNemar against the baseline, a plot)."""


@experiments_group.command("show")
@click.argument("name")
@db_option
@click.option("-o", "--output", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text")
@click.option("--plot", "plot_file", metavar="FILE.png", help="Also draw accuracy against cost and the latencies (needs matplotlib).")
def experiments_show(name: str, db: str | None, fmt: str, plot_file: str | None) -> int:
    """One experiment's report: per arm counts, accuracy (95% Wilson interval), latency, tokens, cost;
    against the baseline the exact McNemar p-value and the items that regressed and improved."""
    from reconciler.cli.runs import _engine, print_distribution
    from reconciler.runs.experiment_report import render_markdown, render_text
    from reconciler.runs.experiment_views import experiment_distribution, experiment_report

    engine = _engine(db)
    report = experiment_report(engine, name)
    distributed = experiment_distribution(engine, name)  # chunks and workers, for one run by workers
    if plot_file is not None:
        from reconciler.runs.experiment_plot import plot_report

        written = plot_report(report, plot_file)
        click.echo(f"Plot written to {written}", err=True)
    if fmt == "json":
        click.echo(json.dumps({**report.data, **distributed}, indent=2, ensure_ascii=False, default=str))
    elif fmt == "markdown":
        click.echo(render_markdown(report))
    else:
        click.echo(render_text(report))
        if distributed:
            print_distribution(distributed)
    return 0


@experiments_group.command("list")
@db_option
@listing_option
def experiments_list(db: str | None, fmt: str) -> int:
    """Every experiment: status, task, agents, inputs."""
    from reconciler.cli.output import emit_batch_rows
    from reconciler.runs.experiment_views import experiment_rows

    columns = ["name", "status", "task", "agents", "inputs", "repeats", "elapsed_s", "started_at"]
    emit_batch_rows(experiment_rows(read_engine(db)), fmt, columns)
    return 0


def report_after_run(engine: Any, name: str) -> None:
    """The text report, printed by `reconciler run` once an experiment ends."""
    from reconciler.runs.experiment_report import render_text
    from reconciler.runs.experiment_views import experiment_report

    click.echo(render_text(experiment_report(engine, name)))
