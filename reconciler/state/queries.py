"""Read-only listings for `reconciler get` and `reconciler history` (plain dicts, ready to render)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from reconciler.kinds import ALIASES
from reconciler.kinds.base import iso as _iso
from reconciler.state.tables import reconciler_applies, reconciler_resources

RESOURCE_KINDS = {k.plural: k.name for k in ALIASES.values()}


def _managed(conn: Any, kind: str) -> dict[str, str]:
    t = reconciler_resources
    return {str(r.row_id): r.name for r in conn.execute(select(t.c.row_id, t.c.name).where(t.c.kind == kind))}


def list_resources(engine: Engine | None, what: str, name: str | None = None) -> list[dict[str, Any]]:
    """The rows of one kind (``what``: its plural or singular), as `reconciler get` shows them."""
    if engine is None:
        return []
    k = ALIASES[what]
    assert k.list_rows is not None
    with engine.connect() as conn:
        rows = k.list_rows(conn, _managed(conn, k.name))
    if name is not None:
        rows = [r for r in rows if r["name"] == name]
    return rows


def list_history(engine: Engine | None, limit: int = 50) -> list[dict[str, Any]]:
    if engine is None:
        return []
    h = reconciler_applies
    with engine.connect() as conn:
        rows = conn.execute(select(h).order_by(h.c.id.desc()).limit(limit)).mappings().all()
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
            "plan": r["plan"],
        }
        for r in rows
    ]
