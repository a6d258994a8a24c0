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


# what each event says after "worker NAME: " ({on_run} is "run NAME " when the event names a run,
# {tail} ": ERROR" when it has an error); the events not listed are for --json only
_LINES = {
    "started": "started on queues {queues}, {concurrency} items at once",
    "chunk_started": "{on_run}chunk {chunk}: {items} items (attempt {attempt})",
    "chunk_done": "{on_run}chunk {chunk} done, {stored} stored{tail}",
    "chunk_stopped": "{on_run}chunk {chunk} stopped, {stored} stored{tail}",
    "chunk_requeued": "{on_run}chunk {chunk} back to the queue ({stored} stored, {left} left)",
    "run_finished": "run {run} finished: {summary}",
    "stalled_retried": "retried the chunks of stalled workers (jobs {jobs})",
    "stopping": "stopping: the items in flight finish, the rest go back to the queue (again to stop at once)",
    "stopping_now": "stopping now: the items in flight are cancelled and go back to the queue",
    "repair_failed": "could not check for stalled workers: {error}",
    "job_lost": "a chunk it held was taken over by another worker ({error})",
    "queue_warning": "task queue: {message}{tail}",
    "queue_error": "task queue: {message}{tail}",
    "queue_critical": "task queue: {message}{tail}",
    "stopped": "stopped after {chunks} chunks, {items} items stored",
}


def _line(event: dict[str, object]) -> str | None:
    """One event for people, or None for those only --json shows."""
    template = _LINES.get(str(event["event"]))
    if template is None:
        return None
    on_run = f"run {event.get('run')} " if event.get("run") else ""
    tail = f": {event['error']}" if event.get("error") else ""
    return f"worker {event['worker']}: " + template.format_map({**event, "on_run": on_run, "tail": tail})


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
