"""The history of everything that wrote the managed state: applies, adoptions, key rotations.

One row per operation in ``reconciler_applies``; ``reconciler history`` lists them."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from reconciler.kinds.base import utcnow

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

    from reconciler.state.write import RowWriter


def record_operation(
    conn: Connection | RowWriter,
    *,
    command: str,
    user: str,
    details: dict[str, Any],
    started: datetime | None = None,
    source: str | None = None,
    git: dict[str, Any] | None = None,
    created: int = 0,
    updated: int = 0,
    deleted: int = 0,
) -> int:
    """Insert one history row inside the caller's transaction; returns its id. ``details`` is
    what changed (an apply's plan, the adopted resources, the re-encrypted providers); it must
    never hold a secret. ``conn``: an SQLAlchemy connection, or apply's writer."""
    from reconciler.state.write import writer_for

    git = git or {}
    return writer_for(conn).insert_returning_id(
        "reconciler_applies",
        {
            "started_at": started or utcnow(),
            "finished_at": utcnow(),
            "user": user,
            "command": command,
            "source": source,
            "git_commit": git.get("commit"),
            "git_dirty": git.get("dirty"),
            "git_ref": git.get("ref"),
            "git_author": git.get("author"),
            "git_subject": git.get("subject"),
            "created": created,
            "updated": updated,
            "deleted": deleted,
            "plan": details,
        },
    )


EVALUATIONS_SCANNED = 1000  # how far back `get assignments` looks for a configuration's last evaluation


def last_evaluations(engine: Engine, wanted: set[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(assignment, config sha256) -> the newest applied evaluation of that configuration (its
    ``after`` figures, ``passed``, ``apply_id``, ``measured_at``), for those of ``wanted`` found in the
    last ``EVALUATIONS_SCANNED`` operations. Reads the applied plans newest first and stops once every
    wanted configuration is found."""
    from sqlalchemy import inspect, select

    from reconciler.state.tables import reconciler_applies as t

    found: dict[tuple[str, str], dict[str, Any]] = {}
    with engine.connect() as conn:
        if not wanted or not inspect(conn).has_table(t.name):
            return found
        query = select(t.c.id, t.c.finished_at, t.c.plan).order_by(t.c.id.desc()).limit(EVALUATIONS_SCANNED)
        for row in conn.execution_options(yield_per=20).execute(query):
            for d in (row.plan or {}).get("evaluations") or ():
                key = (d["assignment"], d["after"]["config_sha256"])
                if key in wanted and key not in found:
                    found[key] = {**d["after"], "passed": d["passed"], "apply_id": row.id, "measured_at": row.finished_at}
            if len(found) == len(wanted):
                break
    return found
