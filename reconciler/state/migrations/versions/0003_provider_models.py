"""The model list each provider gave at its last validation (provider_models).

Revision ID: 0003
Revises: 0001
"""

from alembic import op
from sqlalchemy import inspect

from reconciler.state.tables import provider_models

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if not inspect(bind).has_table(provider_models.name):  # 0001 creates every table of a new database
        provider_models.create(bind)


def downgrade() -> None:
    op.drop_table(provider_models.name)
