"""Experiments (their arms are analysis runs), the answer cache, and which results reused an answer.

Revision ID: 0004
Revises: 0003

Idempotent like 0001: a database created fresh at a newer release already has these (0001 creates
every table of the current metadata), and a seed database migrated in one go gets them from 0001.
"""

from alembic import op
from sqlalchemy import Boolean, Column, inspect

from reconciler.state.tables import metadata

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

NEW_TABLES = ("experiments", "experiment_arms", "answer_cache")


def upgrade() -> None:
    bind = op.get_bind()
    existing = set(inspect(bind).get_table_names())
    for name in NEW_TABLES:  # in dependency order
        if name not in existing:
            metadata.tables[name].create(bind)
    if "reused" not in {c["name"] for c in inspect(bind).get_columns("run_results")}:
        op.add_column("run_results", Column("reused", Boolean, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("run_results") as batch:
        batch.drop_column("reused")
    for name in reversed(NEW_TABLES):
        op.drop_table(name)
