"""Distributed runs: the task queue's schema (procrastinate, on PostgreSQL only), the chunks of a
distributed run (run_chunks) and which worker stored each result (run_results.worker).

Revision ID: 0005
Revises: 0004

Our own table and column follow the metadata on both backends, created only where missing (0001
creates every table of the current metadata, so a new database already has them). The queue's
schema is procrastinate's own ``schema.sql`` of the pinned release (pyproject: procrastinate
>=3.10,<3.11); SQLite has no queue, so there this part does nothing. A later procrastinate release
needs a new revision that applies its files under ``procrastinate/sql/migrations/`` after 3.10.
"""

from alembic import op
from sqlalchemy import inspect

from reconciler.state.schema import install_queue_schema, run_script
from reconciler.state.tables import run_chunks, run_results

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

QUEUE_TABLE = "procrastinate_jobs"


def upgrade() -> None:
    bind = op.get_bind()
    if not inspect(bind).has_table(run_chunks.name):
        run_chunks.create(bind)
    if "worker" not in {c["name"] for c in inspect(bind).get_columns(run_results.name)}:
        added = run_results.c.worker._copy()
        op.add_column(run_results.name, added)
    if bind.dialect.name == "postgresql" and not inspect(bind).has_table(QUEUE_TABLE):
        install_queue_schema(bind)


# procrastinate ships no uninstall script: its tables, then its functions and types, by their prefix
_DROP_QUEUE = r"""
DROP TABLE IF EXISTS procrastinate_periodic_defers, procrastinate_events, procrastinate_jobs, procrastinate_workers CASCADE;
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT p.oid::regprocedure AS f FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE p.proname LIKE 'procrastinate\_%' AND n.nspname = current_schema() LOOP
        EXECUTE 'DROP FUNCTION ' || r.f || ' CASCADE';
    END LOOP;
    FOR r IN SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
             WHERE t.typname LIKE 'procrastinate\_%' AND t.typtype IN ('e', 'c') AND n.nspname = current_schema() LOOP
        EXECUTE 'DROP TYPE IF EXISTS ' || quote_ident(r.typname) || ' CASCADE';
    END LOOP;
END $$;
"""


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        run_script(bind, _DROP_QUEUE)
    op.drop_table(run_chunks.name)
    with op.batch_alter_table(run_results.name) as batch:
        batch.drop_column("worker")
