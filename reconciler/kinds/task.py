"""Task: what an agent is asked to produce, as a JSON Schema (the seed's ``task_configs``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import JSON, Boolean, Column, Text, select

from reconciler.kinds.base import (
    ExportedSpec,
    ExportSource,
    FileRef,
    Fingerprint,
    Kind,
    KindName,
    Strict,
    column_rows,
    inactive_flag,
    listing,
    named_table,
    without_none,
)

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from reconciler.manifests.loader import Manifest

task_configs = named_table(
    "task_configs",
    Column("description", Text),
    Column("response_schema", JSON, nullable=False),
    Column("is_active", Boolean, nullable=False, default=True),
)


class TaskSpec(Strict):
    description: str | None = None
    response_schema: FileRef | dict[str, Any] = Field(description="an inline JSON Schema, or {from_file: path} relative to the manifest")
    is_active: bool = True

    @field_validator("response_schema", mode="before")
    @classmethod
    def _file_or_inline(cls, value: Any) -> Any:
        if isinstance(value, dict) and "from_file" in value and len(value) == 1:
            return FileRef(from_file=value["from_file"]) if isinstance(value["from_file"], str) else value
        if isinstance(value, dict):
            return value
        raise PydanticCustomError("schema_shape", "expected a JSON Schema mapping or {from_file: path}")


_COLUMNS = ("description", "response_schema", "is_active")


def _essence(m: Manifest, fingerprint: Fingerprint | None) -> dict[str, Any]:
    return {"description": m.spec.description, "response_schema": m.resolved["response_schema"], "is_active": m.spec.is_active}


def _export(source: ExportSource) -> ExportedSpec:
    e = source.essence
    spec = without_none({"description": e.get("description"), "response_schema": e.get("response_schema") or {}})
    return ExportedSpec(inactive_flag(e, spec))


def _list_rows(conn: Connection, managed: Mapping[str, str]) -> list[dict[str, Any]]:
    t = task_configs
    return [listing(r, ("name", "description", "is_active", "response_schema"), managed) for r in conn.execute(select(t).order_by(t.c.name))]


TASK = Kind(
    name=KindName.TASK,
    spec_model=TaskSpec,
    essence=_essence,
    **column_rows(task_configs, _COLUMNS),
    export=_export,
    get_columns=("name", "description", "is_active", "managed"),
    list_rows=_list_rows,
)
