"""Experiment: the same inputs through several agents of one task, compared (the seed's A/B testing of
its agent-task M2M: "run parallel analysis runs with different agents — compare accuracy, cost, speed").

A Run's sibling: the same input sources, prompt rendering and ``expected``; each agent becomes an arm,
an unnamed analysis run with its own config snapshot, created when the experiment starts. Like runs,
an experiment is history once it starts: never pruned, never changed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from reconciler.kinds.base import Fingerprint, KindName, Reference, id_column, table_metadata, timestamp_columns
from reconciler.kinds.run import (
    batch_essence,
    batch_kind,
)

if TYPE_CHECKING:
    from sqlalchemy import Table

    from reconciler.manifests.loader import Manifest


def _table(name: str) -> Table:
    from sqlalchemy import JSON, Column, DateTime, Float, ForeignKey, Integer, String, Table, Text, Uuid

    return Table(
        name,
        table_metadata(),
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


_FIELDS = ("inputs", "prompt_template", "expected", "repeats", "concurrency", "max_retries", "timeout_seconds", "trigger")


def _essence(m: Manifest, fingerprint: Fingerprint | None) -> dict[str, Any]:
    """Compared by the digest of its inputs; the inputs themselves travel in the payload."""
    s = m.spec
    return {"task": s.task, "agents": list(s.agents), "baseline": s.baseline or s.agents[0], **batch_essence(m, _FIELDS)}


EXPERIMENT = batch_kind(KindName.EXPERIMENT, "ExperimentSpec", _essence, ("experiments", _table), "task", Reference("task_id", KindName.TASK))
