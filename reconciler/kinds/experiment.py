"""Experiment: the same inputs through several agents of one task, compared (the seed's A/B testing of
its agent-task M2M: "run parallel analysis runs with different agents — compare accuracy, cost, speed").

A Run's sibling: the same input sources, prompt rendering and ``expected``; each agent becomes an arm,
an unnamed analysis run with its own config snapshot, created when the experiment starts. Like runs,
an experiment is history once it starts: never pruned, never changed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import JSON, Column, DateTime, Float, ForeignKey, Integer, String, Table, Text, Uuid, select

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
from reconciler.kinds.run import Expected, RunInput, inputs_digest

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from reconciler.manifests.loader import Manifest

experiments = Table(
    "experiments",
    metadata,
    id_column(),
    Column("name", String(255), nullable=False, unique=True, index=True),
    Column("task_id", Uuid, ForeignKey("task_configs.id", ondelete="SET NULL"), index=True),
    Column("spec", JSON, nullable=False),
    Column("status", String(16), nullable=False, default="pending"),
    Column("error", Text),
    Column("started_at", DateTime(timezone=True)),
    Column("completed_at", DateTime(timezone=True)),
    Column("items_total", Integer, nullable=False, default=0),  # inputs (each asked `repeats` times per arm)
    Column("elapsed_seconds", Float),
    Column("runner", String(255)),  # host:pid executing it, so two never run at once
    Column("heartbeat_at", DateTime(timezone=True)),
    *timestamp_columns(),
)

AgentName = Annotated[str, Field(pattern=NAME_PATTERN)]


class ExperimentSpec(Strict):
    task: str = Field(pattern=NAME_PATTERN)
    agents: list[AgentName] = Field(min_length=1, max_length=16, description="one arm per agent; each must be assigned to the task")
    baseline: str | None = Field(default=None, pattern=NAME_PATTERN, description="the agent the others are compared with (default: the first)")
    inputs: list[RunInput] | None = Field(default=None, min_length=1)
    inputs_file: str | None = Field(default=None, min_length=1, description="JSONL or CSV, relative to the manifest")
    prompt_template: str | None = Field(default=None, description="'{field}' placeholders filled from each input")
    expected: Expected | None = Field(
        default=None,
        description="where the right answer is: {input: FIELD, output: PROPERTY}, or one name for both (accuracy)",
    )
    repeats: int = Field(default=1, ge=1, le=100, description="each input is asked this many times per agent")
    concurrency: int = Field(default=4, ge=1, le=256, description="workers shared by every arm")
    max_retries: int = Field(default=2, ge=0, le=10)
    timeout_seconds: float = Field(default=120.0, gt=0, le=3600)
    trigger: Literal["manual", "on_apply"] = "manual"

    @model_validator(mode="after")
    def _check(self) -> ExperimentSpec:
        if (self.inputs is None) == (self.inputs_file is None):
            raise PydanticCustomError("experiment_inputs", "give exactly one of inputs or inputs_file")
        twice = sorted({a for a in self.agents if self.agents.count(a) > 1})
        if twice:
            raise PydanticCustomError("experiment_agents", "agents are listed once each; repeated: {twice}", {"twice": ", ".join(twice)})
        if self.baseline is not None and self.baseline not in self.agents:
            raise PydanticCustomError(
                "experiment_baseline",
                "baseline '{baseline}' is not one of the agents ({agents})",
                {"baseline": self.baseline, "agents": ", ".join(self.agents)},
            )
        return self


def _essence(m: Manifest, fingerprint: Fingerprint | None) -> dict[str, Any]:
    """Compared by the digest of its inputs; the inputs themselves travel in the payload."""
    s = m.spec
    inputs = m.resolved.get("inputs") or []
    return {
        "task": s.task,
        "agents": list(s.agents),
        "baseline": s.baseline or s.agents[0],
        "inputs_file": s.inputs_file,
        "inputs_sha256": inputs_digest(inputs),
        "items": len(inputs),
        "prompt_template": s.prompt_template,
        "expected": s.expected,
        "repeats": s.repeats,
        "concurrency": s.concurrency,
        "max_retries": s.max_retries,
        "timeout_seconds": s.timeout_seconds,
        "trigger": s.trigger,
    }


def _payload(m: Manifest) -> dict[str, Any]:
    return {"inputs": m.resolved.get("inputs") or []}


def _row_values(d: dict[str, Any], ids: Ids) -> dict[str, Any]:
    spec = {k: v for k, v in d.items() if not k.startswith("_")}
    spec["inputs"] = d.get("_inputs") or []
    return {"task_id": ids[("Task", d["task"])], "spec": spec, "items_total": d["items"], "status": "pending"}


def _read(conn: Connection, names: Names) -> list[RowRead]:
    """The experiments; the essence is what was applied (from the bookkeeping), plus whether it
    started (then it is immutable). Not the status itself: progress must not stale saved plans."""
    e = experiments.c
    return [RowRead(row.name, row.id, {"started": row.status != "pending"}) for row in conn.execute(select(raw_id(e.id), e.name, e.status)).all()]


def _export(source: ExportSource) -> ExportedSpec:
    raise TypeError("experiments are history, not configuration: they are not exported")


EXPERIMENT = Kind(
    name=KindName.EXPERIMENT,
    plural="experiments",
    table=experiments,
    spec_model=ExperimentSpec,
    essence=_essence,
    row_values=_row_values,
    read=_read,
    export=_export,
    references={"task": Reference("task_id", KindName.TASK)},
    payload=_payload,
    history=True,
)
