"""The history of everything that wrote the managed state: applies, adoptions, key rotations.

One row per operation in ``reconciler_applies``; ``reconciler history`` lists them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert

from reconciler.state.tables import reconciler_applies, utcnow


def record_operation(
    conn: Connection,
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
    never hold a secret."""
    git = git or {}
    table = reconciler_applies
    result = conn.execute(
        insert(table).returning(table.c.id),
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
    return int(result.scalar_one())
