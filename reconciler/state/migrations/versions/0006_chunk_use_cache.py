"""Distributed experiments and the answer cache: run_chunks.use_cache (``run --distribute --no-cache``
makes the workers call the model for every item, as ``run --no-cache`` does in one process).

Revision ID: 0006
Revises: 0005

NULL (a chunk queued before this revision) means the cache is used, as it is by default. Created only
where missing: 0001 creates every table of the current metadata, so a new database has it already.
"""

from alembic import op
from sqlalchemy import inspect

from reconciler.state.tables import run_chunks

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if "use_cache" not in {c["name"] for c in inspect(bind).get_columns(run_chunks.name)}:
        op.add_column(run_chunks.name, run_chunks.c.use_cache._copy())


def downgrade() -> None:
    with op.batch_alter_table(run_chunks.name) as batch:
        batch.drop_column("use_cache")
