"""Task: what an agent is asked to produce, as a JSON Schema (the seed's ``task_configs``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

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
from reconciler.kinds.run import ExpectedFields, RunInput

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


class EvaluationGate(Strict):
    """When `plan --evaluate` refuses a changed configuration of the task (exit 1, `apply --evaluate` applies nothing)."""

    min_accuracy: float | None = Field(default=None, ge=0, le=1, description="the lowest accuracy any assignment of the task may have")
    max_drop: float | None = Field(default=None, ge=0, le=1, description="the largest fall of accuracy allowed against the configuration applied now")
    significance: float | None = Field(
        default=None, gt=0, le=1, description="a fall beyond max_drop counts only when McNemar's exact p is below this (default: any fall counts)"
    )
    min_valid: float | None = Field(default=None, ge=0, le=1, description="the lowest share of schema-valid answers")

    @model_validator(mode="after")
    def _significance_needs_drop(self) -> EvaluationGate:
        if self.significance is not None and self.max_drop is None:
            raise PydanticCustomError("gate_significance", "significance qualifies max_drop: give max_drop as well")
        return self


class TaskEvaluation(Strict):
    """The labelled inputs `plan --evaluate` measures a changed configuration of the task on (never written to the database)."""

    inputs: list[RunInput] | None = Field(default=None, min_length=1)
    inputs_file: str | None = Field(default=None, min_length=1, description="JSONL or CSV, relative to the manifest")
    prompt_template: str | None = Field(default=None, description="'{field}' placeholders filled from each input")
    expected: ExpectedFields = Field(description="where the right answer is: {input: FIELD, output: PROPERTY}")
    gate: EvaluationGate = Field(default_factory=EvaluationGate)
    concurrency: int = Field(default=4, ge=1, le=256)
    max_retries: int = Field(default=2, ge=0, le=10)
    timeout_seconds: float = Field(default=120.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _one_input_source(self) -> TaskEvaluation:
        if (self.inputs is None) == (self.inputs_file is None):
            raise PydanticCustomError("evaluation_inputs", "give exactly one of inputs or inputs_file")
        return self


class TaskSpec(Strict):
    description: str | None = None
    response_schema: FileRef | dict[str, Any] = Field(description="an inline JSON Schema, or {from_file: path} relative to the manifest")
    is_active: bool = True
    evaluation: TaskEvaluation | None = Field(
        default=None, description="labelled inputs and gates for `plan --evaluate`; how the task is tested, not configuration (never written)"
    )

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
    from sqlalchemy import select

    t = TASK.table
    return [listing(r, ("name", "description", "is_active", "response_schema"), managed) for r in conn.execute(select(t).order_by(t.c.name))]


TASK = Kind(
    name=KindName.TASK,
    spec_model=TaskSpec,
    essence=_essence,
    **column_rows("task_configs", _table, _COLUMNS, types={"response_schema": "json"}),
    export=_export,
    get_columns=("name", "description", "is_active", "managed"),
    list_rows=_list_rows,
)
