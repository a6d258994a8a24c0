"""Database tables, as SQLAlchemy Core tables. The first six follow the seed service's models so its
database can be brought under GitOps in place; ``reconciler_*`` tables are the reconciler's own
bookkeeping. Core, not the ORM: nothing here needs identity maps or sessions, and importing
``sqlalchemy.orm`` and building declarative classes cost every command 70 ms at start-up."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


metadata = MetaData()


def _id() -> Column[uuid.UUID]:
    return Column("id", Uuid, primary_key=True, default=uuid.uuid4)


def _timestamps() -> tuple[Column[datetime], Column[datetime]]:
    return (
        Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
        Column("updated_at", DateTime(timezone=True), nullable=False, default=utcnow),
    )


llm_providers = Table(
    "llm_providers",
    metadata,
    _id(),
    Column("name", String(255), nullable=False, unique=True, index=True),
    Column("type", String(32), nullable=False),
    Column("base_url", String(2048)),
    Column("api_key_encrypted", LargeBinary),
    Column("is_active", Boolean, nullable=False, default=True),
    Column("validation_status", String(16), nullable=False, default="pending"),
    Column("validation_error", Text),
    Column("validated_at", DateTime(timezone=True)),
    *_timestamps(),
)

agent_configs = Table(
    "agent_configs",
    metadata,
    _id(),
    Column("name", String(255), nullable=False, unique=True, index=True),
    Column("description", Text),
    Column("provider_id", Uuid, ForeignKey("llm_providers.id", ondelete="RESTRICT"), nullable=False, index=True),
    Column("model_name", String(255), nullable=False),
    Column("system_prompt", Text, nullable=False, default=""),
    Column("temperature", Float),
    Column("max_tokens", Integer),
    Column("is_active", Boolean, nullable=False, default=True),
    *_timestamps(),
)

task_configs = Table(
    "task_configs",
    metadata,
    _id(),
    Column("name", String(255), nullable=False, unique=True, index=True),
    Column("description", Text),
    Column("response_schema", JSON, nullable=False),
    Column("is_active", Boolean, nullable=False, default=True),
    *_timestamps(),
)

agent_task_assignments = Table(
    "agent_task_assignments",
    metadata,
    _id(),
    Column("agent_id", Uuid, ForeignKey("agent_configs.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("task_id", Uuid, ForeignKey("task_configs.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("is_active", Boolean, nullable=False, default=True),
    Column("assigned_at", DateTime(timezone=True), nullable=False, default=utcnow),
    UniqueConstraint("agent_id", "task_id", name="uq_agent_task"),
)

# A batch run (the seed's analysis run) with the exact configuration snapshot it used.
analysis_runs = Table(
    "analysis_runs",
    metadata,
    _id(),
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
    *_timestamps(),
)

# One processed input of a run; (run_id, item_index) is unique so a resume never duplicates.
run_results = Table(
    "run_results",
    metadata,
    _id(),
    Column("run_id", Uuid, ForeignKey("analysis_runs.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("item_index", Integer, nullable=False),
    Column("input", JSON, nullable=False),
    Column("output", JSON),
    Column("valid", Boolean, nullable=False, default=False),
    Column("error", Text),
    Column("attempts", Integer, nullable=False, default=0),
    Column("input_tokens", Integer, nullable=False, default=0),
    Column("output_tokens", Integer, nullable=False, default=0),
    Column("latency_ms", Float),
    Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
    UniqueConstraint("run_id", "item_index", name="uq_run_item"),
)

# What the reconciler manages and what it last applied (the essence), for prune and drift.
reconciler_resources = Table(
    "reconciler_resources",
    metadata,
    Column("kind", String(32), primary_key=True),
    Column("name", String(255), primary_key=True),
    Column("row_id", Uuid, nullable=False, index=True),
    Column("applied", JSON, nullable=False),
    Column("labels", JSON),
    Column("annotations", JSON),
    Column("secret_digest", String(80)),  # "sha256:" + 64 hex digits
    Column("apply_id", Integer),
    Column("updated_at", DateTime(timezone=True), nullable=False, default=utcnow),
)

# One operation that wrote the state (apply, adopt, secrets rotate/forget): when, who, which commit, what changed.
reconciler_applies = Table(
    "reconciler_applies",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    Column("user", String(255), nullable=False),
    Column("command", String(64), nullable=False, default="apply"),
    Column("source", Text),
    Column("git_commit", String(64)),
    Column("git_dirty", Boolean),
    Column("git_ref", String(255)),
    Column("git_author", String(255)),
    Column("git_subject", Text),
    Column("created", Integer, nullable=False, default=0),
    Column("updated", Integer, nullable=False, default=0),
    Column("deleted", Integer, nullable=False, default=0),
    Column("plan", JSON, nullable=False),
)

KIND_TABLES = {
    "Provider": llm_providers,
    "Agent": agent_configs,
    "Task": task_configs,
    "Assignment": agent_task_assignments,
    "Run": analysis_runs,
}
