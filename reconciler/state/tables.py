"""Database tables, as SQLAlchemy Core tables. The tables of the resource kinds follow the seed
service's models so its database can be brought under GitOps in place; each is defined by its kind
(``reconciler/kinds/``, built on first use) and re-exported here. ``run_results`` and the
``reconciler_*`` tables are the reconciler's own. Core, not the ORM: nothing here needs identity
maps or sessions, and importing ``sqlalchemy.orm`` and building declarative classes cost every
command 70 ms at start-up. Importing this module imports SQLAlchemy: the state read of a plan
(``state.snapshot``) names tables by their names instead."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
)

from reconciler.kinds import KINDS
from reconciler.kinds.agent import AGENT
from reconciler.kinds.assignment import ASSIGNMENT
from reconciler.kinds.base import id_column, table_metadata, utcnow
from reconciler.kinds.experiment import EXPERIMENT
from reconciler.kinds.provider import PROVIDER
from reconciler.kinds.run import RUN
from reconciler.kinds.task import TASK

metadata = table_metadata()
KIND_TABLES = {k.name: k.table for k in KINDS}  # every kind's table, in dependency order
llm_providers = PROVIDER.table
task_configs = TASK.table
agent_configs = AGENT.table
agent_task_assignments = ASSIGNMENT.table
analysis_runs = RUN.table
experiments = EXPERIMENT.table

# One processed input of a run; (run_id, item_index) is unique so a resume never duplicates.
run_results = Table(
    "run_results",
    metadata,
    id_column(),
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
    Column("reused", Boolean, default=False),  # the answer came from the answer cache (no model call)
    Column("worker", String(255)),  # host:pid of the `reconciler worker` that stored it (distributed runs)
    UniqueConstraint("run_id", "item_index", name="uq_run_item"),
)

# A distributed run's items in chunks, one task-queue job each (runs/distributed/). The queue leases
# and retries the jobs; this table records what became of each chunk, so the one that finishes last
# knows it is last (under the run's row lock) and the progress can be shown without the queue.
run_chunks = Table(
    "run_chunks",
    metadata,
    id_column(),
    Column("run_id", Uuid, ForeignKey("analysis_runs.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("chunk", Integer, nullable=False),  # 0, 1, ... within one distribution of the run
    Column("items", JSON, nullable=False),  # the item indexes it holds
    Column("state", String(16), nullable=False, default="queued"),  # queued | running | done | stopped
    Column("queue", String(128), nullable=False),
    Column("concurrency", Integer, nullable=False),  # items at once on one worker
    Column("retry_failed", Boolean, nullable=False, default=False),
    Column("max_consecutive_failures", Integer),  # transient failures in a row before a worker stops it
    Column("use_cache", Boolean),  # reuse answers from the answer cache (NULL: yes; run --no-cache: false)
    Column("job_id", BigInteger),  # the queue's job, once deferred
    Column("worker", String(255)),  # host:pid that took it last
    Column("attempts", Integer, nullable=False, default=0),
    Column("error", Text),  # why it stopped
    Column("enqueued_at", DateTime(timezone=True), nullable=False, default=utcnow),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    UniqueConstraint("run_id", "chunk", name="uq_run_chunk"),
)

# The models a provider listed when it was last validated, so an agent's model_name can be checked
# without asking the provider again (`get agents`, `run`, `test`). Gone with its provider.
provider_models = Table(
    "provider_models",
    metadata,
    Column("provider_id", Uuid, ForeignKey("llm_providers.id", ondelete="CASCADE"), primary_key=True),
    Column("models", JSON, nullable=False),
    Column("listed_at", DateTime(timezone=True), nullable=False, default=utcnow),
)

# An experiment's arms: each agent's answers are an unnamed analysis run, so an arm has its own
# config snapshot, counters and results exactly like a run.
experiment_arms = Table(
    "experiment_arms",
    metadata,
    Column("experiment_id", Uuid, ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True),
    Column("arm_index", Integer, primary_key=True),  # the agent's position in spec.agents
    Column("agent_name", String(255), nullable=False),
    Column("run_id", Uuid, ForeignKey("analysis_runs.id", ondelete="CASCADE"), nullable=False, unique=True),
)

# Valid answers by what was sent: (settings that reach the model, the messages, which repeat). A run
# or arm that would send exactly the same thing reuses the answer instead of calling the model.
answer_cache = Table(
    "answer_cache",
    metadata,
    Column("config_sha256", String(64), primary_key=True),
    Column("messages_sha256", String(64), primary_key=True),
    Column("repeat_index", Integer, primary_key=True),
    Column("output", JSON),
    Column("input_tokens", Integer, nullable=False, default=0),
    Column("output_tokens", Integer, nullable=False, default=0),
    Column("latency_ms", Float),
    Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
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

__all__ = [
    "KIND_TABLES",
    "agent_configs",
    "agent_task_assignments",
    "analysis_runs",
    "answer_cache",
    "experiment_arms",
    "experiments",
    "llm_providers",
    "metadata",
    "reconciler_applies",
    "reconciler_resources",
    "run_chunks",
    "run_results",
    "task_configs",
    "utcnow",
]
