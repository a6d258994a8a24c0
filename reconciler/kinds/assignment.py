"""Assignment: which agent handles which task (the seed's ``agent_task_assignments``, its M2M for A/B
testing). The table has no name column: reconciler names each pair in its bookkeeping."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from reconciler.kinds.base import (
    Fingerprint,
    Kind,
    KindName,
    Reference,
    column_rows,
    id_column,
    listing,
    plain_export,
    table_metadata,
    utcnow,
)

if TYPE_CHECKING:
    from sqlalchemy import Connection, Select, Table

    from reconciler.manifests.loader import Manifest


def _table(name: str) -> Table:
    from sqlalchemy import Boolean, Column, DateTime, ForeignKey, Table, UniqueConstraint, Uuid

    return Table(
        name,
        table_metadata(),
        id_column(),
        Column("agent_id", Uuid, ForeignKey("agent_configs.id", ondelete="CASCADE"), nullable=False, index=True),
        Column("task_id", Uuid, ForeignKey("task_configs.id", ondelete="CASCADE"), nullable=False, index=True),
        Column("is_active", Boolean, nullable=False, default=True),
        Column("assigned_at", DateTime(timezone=True), nullable=False, default=utcnow),
        UniqueConstraint("agent_id", "task_id", name="uq_agent_task"),
    )


_COLUMNS = ("is_active",)
_REFERENCES = {"agent": Reference("agent_id", KindName.AGENT), "task": Reference("task_id", KindName.TASK)}


def pair_name(essence: dict[str, Any]) -> str:
    """The name of an assignment row reconciler does not manage: ``AGENT+TASK``."""
    return f"{essence['agent']}+{essence['task']}"


def _essence(m: Manifest, fingerprint: Fingerprint | None) -> dict[str, Any]:
    return {"agent": m.spec.agent, "task": m.spec.task, "is_active": m.spec.is_active}


def assignment_details() -> Select[Any]:
    """Each assignment with its agent, task and provider names and the provider's type, as the
    seed's ``list_with_details`` (``get`` and the API list them so)."""
    from sqlalchemy import select

    from reconciler.kinds.agent import AGENT
    from reconciler.kinds.provider import PROVIDER
    from reconciler.kinds.task import TASK

    s, a, t, p = ASSIGNMENT.table, AGENT.table, TASK.table, PROVIDER.table
    return (
        select(
            s.c.id,
            s.c.is_active,
            s.c.assigned_at,
            a.c.name.label("agent_name"),
            t.c.name.label("task_name"),
            p.c.name.label("provider_name"),
            p.c.type.label("provider_type"),
        )
        .join_from(s, a, a.c.id == s.c.agent_id)
        .join(t, t.c.id == s.c.task_id)
        .join(p, p.c.id == a.c.provider_id)
    )


def _list_rows(conn: Connection, managed: Mapping[str, str]) -> list[dict[str, Any]]:
    from reconciler.kinds.agent import AGENT
    from reconciler.kinds.task import TASK

    query = assignment_details().order_by(AGENT.table.c.name, TASK.table.c.name)
    fields = ("agent_name", "task_name", "provider_name", "provider_type", "is_active", "assigned_at")
    return [{"name": managed.get(str(r.id), f"{r.agent_name}+{r.task_name}"), **listing(r, fields, managed)} for r in conn.execute(query)]


ASSIGNMENT = Kind(
    name=KindName.ASSIGNMENT,
    spec="AssignmentSpec",
    essence=_essence,
    **column_rows("agent_task_assignments", _table, _COLUMNS, _REFERENCES, name_of=pair_name),
    export=plain_export(("agent", "task"), _REFERENCES),
    named_rows=False,
    natural_name=pair_name,
    delete_first=True,
    stamps="assigned",
    get_columns=("name", "agent_name", "task_name", "provider_name", "provider_type", "is_active", "managed"),
    list_rows=_list_rows,
)
