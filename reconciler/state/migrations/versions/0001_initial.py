"""Initial schema: the seed service's tables (created only where missing, so an existing seed
database is brought under management in place) plus reconciler's bookkeeping tables.

Revision ID: 0001
Revises:
"""

from alembic import op
from sqlalchemy import inspect

from reconciler.state.tables import metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    existing = set(inspect(bind).get_table_names())
    for table in metadata.sorted_tables:
        if table.name not in existing:
            table.create(bind)
            continue
        # A seed database: add the columns (nullable, since rows exist) and indexes it lacks.
        have = {c["name"] for c in inspect(bind).get_columns(table.name)}
        for column in table.columns:
            if column.name not in have:
                added = column._copy()
                added.nullable = True
                added.unique = None
                added.index = None
                op.add_column(table.name, added)
        indexes = {ix["name"] for ix in inspect(bind).get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexes:
                index.create(bind)


def downgrade() -> None:
    # Only reconciler's own tables: the configuration tables may predate it (a seed database).
    for name in ("reconciler_applies", "reconciler_resources"):
        op.drop_table(name)
