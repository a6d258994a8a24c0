"""worker: take chunks of distributed runs from the task queue (PostgreSQL). The implementation is
imported inside the command, so no other command loads the task engine."""

from __future__ import annotations

import json

import click

from reconciler.cli import cli
from reconciler.cli.options import db_option


def _queues(values: tuple[str, ...]) -> tuple[str, ...] | None:
    names = tuple(q.strip() for v in values for q in v.split(",") if q.strip())
    return names or None


def _line(event: dict[str, object]) -> str | None:
    """One event for people, or None for those only --json shows."""
    kind, who = event["event"], event["worker"]
    run = f"run {event.get('run')} " if event.get("run") else ""
    if kind == "started":
        return f"worker {who}: started on queues {event['queues']}, {event['concurrency']} items at once"
    if kind == "chunk_started":
        return f"worker {who}: {run}chunk {event['chunk']}: {event['items']} items (attempt {event['attempt']})"
    if kind in {"chunk_done", "chunk_stopped"}:
        tail = f": {event['error']}" if event.get("error") else ""
        return f"worker {who}: {run}chunk {event['chunk']} {kind.removeprefix('chunk_')}, {event['stored']} stored{tail}"
    if kind == "chunk_requeued":
        return f"worker {who}: {run}chunk {event['chunk']} back to the queue ({event['stored']} stored, {event['left']} left)"
    if kind == "run_finished":
        return f"worker {who}: run {event['run']} finished: {event['summary']}"
    if kind == "stalled_retried":
        return f"worker {who}: retried the chunks of stalled workers (jobs {event['jobs']})"
    if kind == "stopping":
        return f"worker {who}: stopping: the items in flight finish, the rest go back to the queue (again to stop at once)"
    if kind == "stopping_now":
        return f"worker {who}: stopping now: the items in flight are cancelled and go back to the queue"
    if kind == "repair_failed":
        return f"worker {who}: could not check for stalled workers: {event['error']}"
    if kind == "job_lost":
        return f"worker {who}: a chunk it held was taken over by another worker ({event['error']})"
    if kind in {"queue_warning", "queue_error", "queue_critical"}:
        tail = f": {event['error']}" if event.get("error") else ""
        return f"worker {who}: task queue: {event['message']}{tail}"
    if kind == "stopped":
        return f"worker {who}: stopped after {event['chunks']} chunks, {event['items']} items stored"
    return None


@cli.command("worker")
@db_option
@click.option(
    "--concurrency", type=click.IntRange(1, 1024), default=4, show_default=True, help="Items in flight at once on this worker, over all its chunks."
)
@click.option(
    "--queues", "queues", multiple=True, metavar="NAME[,NAME]", help="Only take chunks from these queues (repeatable; default: every queue)."
)
@click.option(
    "--stalled-after",
    type=click.FloatRange(1.0, 3600.0),
    default=30.0,
    show_default=True,
    metavar="S",
    help="Seconds without a worker's heartbeat before its chunks go to other workers.",
)
@click.option("--json", "as_json", is_flag=True, help="Print each event as a JSON line.")
def worker_command(db: str | None, concurrency: int, queues: tuple[str, ...], stalled_after: float, as_json: bool) -> int:
    """Process the chunks of distributed runs (`reconciler run NAME --distribute`) until SIGTERM or
    Ctrl-C: the items in flight finish, the rest go back to the queue for other workers."""
    from reconciler.errors import ReconcilerError
    from reconciler.runs.distributed.store import require_postgres
    from reconciler.state.db import HEAD_REVISION, database_url, open_engine, schema_revision, translate_db_errors

    url = database_url(db)
    require_postgres(url, "reconciler worker")
    engine = open_engine(db, create=False)
    if engine is None:
        raise ReconcilerError("no state database yet", hint="apply manifests first: reconciler apply PATH")
    with translate_db_errors(url, "opening the database"):
        revision = schema_revision(engine)
    if revision != HEAD_REVISION:
        raise ReconcilerError(
            f"the database's schema is at revision {revision!r}, before the task queue (revision {HEAD_REVISION!r})",
            hint="migrate it once with this release: `reconciler apply PATH` or `reconciler run NAME --distribute`",
        )
    from reconciler.runs.distributed.worker import WorkerOptions, run_worker

    def on_event(event: dict[str, object]) -> None:
        if as_json:
            click.echo(json.dumps(event, default=str))
        else:
            line = _line(event)
            if line is not None:
                click.echo(line, err=True)

    with translate_db_errors(url, "working on the task queue"):
        run_worker(engine, WorkerOptions(concurrency, _queues(queues), stalled_after), on_event)
    return 0
