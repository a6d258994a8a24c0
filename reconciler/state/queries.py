"""Read-only listings for `reconciler get` and `reconciler history` (plain dicts, ready to render)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from reconciler.kinds import ALIASES
from reconciler.kinds.base import iso as _iso
from reconciler.state.tables import reconciler_applies, reconciler_resources

RESOURCE_KINDS = {k.plural: k.name for k in ALIASES.values()}


def _has_table(conn: Any, name: str) -> bool:
    """False in a database reconciler never wrote (a seed service's): reads create nothing."""
    from sqlalchemy import inspect

    return bool(inspect(conn).has_table(name))


def _managed(conn: Any, kind: str) -> dict[str, str]:
    t = reconciler_resources
    if not _has_table(conn, t.name):
        return {}  # every row is unmanaged
    return {str(r.row_id): r.name for r in conn.execute(select(t.c.row_id, t.c.name).where(t.c.kind == kind))}


def list_resources(engine: Engine | None, what: str, name: str | None = None) -> list[dict[str, Any]]:
    """The rows of one kind (``what``: its plural or singular), as `reconciler get` shows them."""
    if engine is None:
        return []
    k = ALIASES[what]
    assert k.list_rows is not None
    with engine.connect() as conn:
        if not _has_table(conn, k.table.name):
            return []
        managed = _managed(conn, k.name)
        rows = k.list_rows(conn, managed)
    if name is not None:  # its name in the database, or the manifest name reconciler manages it by
        rows = [r for r in rows if r["name"] == name or managed.get(r["id"]) == name]
    return rows


def list_history(engine: Engine | None, limit: int = 50, *, plans: bool = True) -> list[dict[str, Any]]:
    """The newest ``limit`` operations; ``plans=False`` leaves out what each one changed (the table
    view shows only the counts, and the plan of a 10,000-resource apply is 6 MB of JSON)."""
    if engine is None:
        return []
    h = reconciler_applies
    with engine.connect() as conn:
        if not _has_table(conn, h.name):
            return []  # a database reconciler never wrote has no history
        columns = list(h.c) if plans else [c for c in h.c if c.name != "plan"]
        rows = conn.execute(select(*columns).order_by(h.c.id.desc()).limit(limit)).mappings().all()
    return [
        {
            "id": r["id"],
            "finished_at": _iso(r["finished_at"]),
            "user": r["user"],
            "command": r["command"],
            "git_commit": r["git_commit"],
            "git_dirty": r["git_dirty"],
            "git_author": r["git_author"],
            "git_subject": r["git_subject"],
            "created": r["created"],
            "updated": r["updated"],
            "deleted": r["deleted"],
            "source": r["source"],
            **({"plan": r["plan"]} if plans else {}),
        }
        for r in rows
    ]
