"""Run: a batch of inputs through one assignment (the seed's ``analysis_runs``), with the exact
configuration snapshot it used. A run is history once it starts: never pruned, never changed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import ConfigDict, Discriminator, Field, Tag, model_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import JSON, Column, DateTime, Float, ForeignKey, Integer, String, Table, Text, Uuid, select
from typing_extensions import TypedDict

from reconciler.hashing import sha256_hex
from reconciler.kinds.base import (
    NAME_PATTERN,
    ExportedSpec,
    ExportSource,
    Fingerprint,
    Ids,
    Kind,
    KindName,
    Names,
    Reference,
    RowRead,
    Strict,
    id_column,
    metadata,
    raw_id,
    timestamp_columns,
)

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from reconciler.manifests.loader import Manifest

analysis_runs = Table(
    "analysis_runs",
    metadata,
    id_column(),
    Column("name", String(255), unique=True, index=True),
    Column("agent_assignment_id", Uuid, ForeignKey("agent_task_assignments.id", ondelete="SET NULL"), index=True),
    Column("spec", JSON),
    Column("config_snapshot", JSON),
    Column("config_sha256", String(64), index=True),
    Column("time_window_start", DateTime(timezone=True)),
    Column("time_window_end", DateTime(timezone=True)),
    Column("status", String(16), nullable=False, default="pending"),
    Column("error", Text),
    Column("started_at", DateTime(timezone=True)),
    Column("completed_at", DateTime(timezone=True)),
    Column("items_total", Integer, nullable=False, default=0),
    Column("items_succeeded", Integer, nullable=False, default=0),
    Column("items_failed", Integer, nullable=False, default=0),
    Column("input_tokens", Integer, nullable=False, default=0),
    Column("output_tokens", Integer, nullable=False, default=0),
    Column("accuracy", Float),
    Column("elapsed_seconds", Float),
    Column("proposals_total", Integer, nullable=False, default=0),
    Column("proposals_approved", Integer, nullable=False, default=0),
    Column("proposals_rejected", Integer, nullable=False, default=0),
    Column("llm_tokens_used", Integer, nullable=False, default=0),
    Column("cost_estimate", Float, nullable=False, default=0.0),
    Column("runner", String(255)),  # host:pid executing it, so two never run at once
    Column("heartbeat_at", DateTime(timezone=True)),
    *timestamp_columns(),
)

RunInput = str | dict[str, Any]


class ExpectedFields(TypedDict):
    """Where the right answer is: a field of each input, compared with a field of the model's output.
    A plain dict (not a model) so it is stored and compared as it was written."""

    __pydantic_config__ = ConfigDict(extra="forbid")  # type: ignore[misc]
    input: Annotated[str, Field(min_length=1, description="the input field holding the right answer")]
    output: Annotated[str, Field(min_length=1, description="the property of the task's response_schema compared with it")]


def _expected_form(value: Any) -> str:
    return "fields" if isinstance(value, dict) else "name"


# a callable discriminator: a mistake in one form is reported for that form only
Expected = Annotated[
    Annotated[str, Field(min_length=1), Tag("name")] | Annotated[ExpectedFields, Tag("fields")],
    Discriminator(_expected_form),
]


class RunSpec(Strict):
    assignment: str = Field(pattern=NAME_PATTERN)
    inputs: list[RunInput] | None = Field(default=None, min_length=1)
    inputs_file: str | None = Field(default=None, min_length=1, description="JSONL or CSV, relative to the manifest")
    prompt_template: str | None = Field(default=None, description="'{field}' placeholders filled from each input")
    concurrency: int = Field(default=4, ge=1, le=256)
    max_retries: int = Field(default=2, ge=0, le=10)
    timeout_seconds: float = Field(default=120.0, gt=0, le=3600)
    expected: Expected | None = Field(
        default=None,
        description="where the right answer is: {input: FIELD, output: PROPERTY}, or one name for both (accuracy)",
    )
    trigger: Literal["manual", "on_apply"] = "manual"

    @model_validator(mode="after")
    def _one_input_source(self) -> RunSpec:
        if (self.inputs is None) == (self.inputs_file is None):
            raise PydanticCustomError("run_inputs", "give exactly one of inputs or inputs_file")
        return self


def inputs_digest(inputs: list[dict[str, Any]]) -> str:
    return "sha256:" + sha256_hex(inputs)


def _essence(m: Manifest, fingerprint: Fingerprint | None) -> dict[str, Any]:
    """A run compares by the digest of its inputs; the inputs themselves travel in the payload."""
    s = m.spec
    inputs = m.resolved.get("inputs") or []
    return {
        "assignment": s.assignment,
        "inputs_file": s.inputs_file,
        "inputs_sha256": inputs_digest(inputs),
        "items": len(inputs),
        "prompt_template": s.prompt_template,
        "concurrency": s.concurrency,
        "max_retries": s.max_retries,
        "timeout_seconds": s.timeout_seconds,
        "expected": s.expected,
        "trigger": s.trigger,
    }


def _payload(m: Manifest) -> dict[str, Any]:
    return {"inputs": m.resolved.get("inputs") or []}


def _row_values(d: dict[str, Any], ids: Ids) -> dict[str, Any]:
    spec = {k: v for k, v in d.items() if not k.startswith("_")}
    spec["inputs"] = d.get("_inputs") or []
    return {
        "agent_assignment_id": ids[("Assignment", d["assignment"])],
        "spec": spec,
        "items_total": d["items"],
        "status": "pending",
    }


def _read(conn: Connection, names: Names) -> list[RowRead]:
    """Named runs. A run's essence is what was applied (from the bookkeeping), plus whether it
    started (then it is immutable)."""
    r = analysis_runs.c
    return [
        # not the status itself: progress must not stale saved plans
        RowRead(row.name, row.id, {"started": row.status != "pending"})
        for row in conn.execute(select(raw_id(r.id), r.name, r.status).where(r.name.is_not(None))).all()
    ]


def _export(source: ExportSource) -> ExportedSpec:
    raise TypeError("runs are history, not configuration: they are not exported")


RUN = Kind(
    name=KindName.RUN,
    plural="runs",
    table=analysis_runs,
    spec_model=RunSpec,
    essence=_essence,
    row_values=_row_values,
    read=_read,
    export=_export,
    references={"assignment": Reference("agent_assignment_id", KindName.ASSIGNMENT)},
    payload=_payload,
    history=True,
)
