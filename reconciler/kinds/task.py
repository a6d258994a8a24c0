"""Task: what an agent is asked to produce, as a JSON Schema (the seed's ``task_configs``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from reconciler.kinds.base import (
    ExportedSpec,
    ExportSource,
    Fingerprint,
    Kind,
    KindName,
    column_rows,
    inactive_flag,
    listing,
    named_table,
    without_none,
)

if TYPE_CHECKING:
    from sqlalchemy import Connection, Table

    from reconciler.manifests.loader import Manifest


def _table(name: str) -> Table:
    from sqlalchemy import JSON, Boolean, Column, Text

    return named_table(
        name,
        Column("description", Text),
        Column("response_schema", JSON, nullable=False),
        Column("is_active", Boolean, nullable=False, default=True),
    )


_COLUMNS = ("description", "response_schema", "is_active")


def _essence(m: Manifest, fingerprint: Fingerprint | None) -> dict[str, Any]:
    return {"description": m.spec.description, "response_schema": m.resolved["response_schema"], "is_active": m.spec.is_active}


def _export(source: ExportSource) -> ExportedSpec:
    e = source.essence
    spec = without_none({"description": e.get("description"), "response_schema": e.get("response_schema") or {}})
    return ExportedSpec(inactive_flag(e, spec))


def _list_rows(conn: Connection, managed: Mapping[str, str]) -> list[dict[str, Any]]:
    from sqlalchemy import select

    t = TASK.table
    return [listing(r, ("name", "description", "is_active", "response_schema"), managed) for r in conn.execute(select(t).order_by(t.c.name))]


TASK = Kind(
    name=KindName.TASK,
    spec="TaskSpec",
    essence=_essence,
    **column_rows("task_configs", _table, _COLUMNS, types={"response_schema": "json"}),
    export=_export,
    get_columns=("name", "description", "is_active", "managed"),
    list_rows=_list_rows,
)
