"""A new, empty database's schema in one transaction, without Alembic.

Running migrations 0001..HEAD on an empty database creates every table of the current metadata
(0001; the later revisions find theirs there), the task queue's schema on PostgreSQL (0005) and
Alembic's version table holding HEAD. Importing Alembic and running its machinery for that was a
tenth of a first apply of 10,000 resources, so a database with no tables at all gets the same
schema here (tests/test_new_schema.py compares the two, table by table, on SQLite and
PostgreSQL); any other database, a seed's or an older reconciler's, goes through Alembic."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine, Table

VERSION_TABLE = "alembic_version"


def create_new_schema(engine: Engine, head: str) -> bool:
    """Create the whole schema at revision ``head`` if the database has no table yet; False (and
    nothing written) otherwise. On SQLite the transaction is ``BEGIN IMMEDIATE``, so a second
    process creating the same database waits and then finds the tables there."""
    from sqlalchemy import inspect

    from reconciler.state.tables import metadata

    with engine.connect() as conn:
        conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            if inspect(conn).get_table_names():
                return False
            version = _version_table()
            version.create(conn)
            metadata.create_all(conn, checkfirst=False)
            if conn.dialect.name == "postgresql":
                install_queue_schema(conn)
            conn.execute(version.insert().values(version_num=head))
    return True


def _version_table() -> Table:
    """Alembic's version table, as ``alembic.ddl.impl.DefaultImpl.version_table_impl`` makes it."""
    from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, String, Table

    return Table(
        VERSION_TABLE,
        MetaData(),
        Column("version_num", String(32), nullable=False),
        PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"),
    )


def install_queue_schema(conn: Connection) -> None:
    """The task queue's schema (procrastinate's ``schema.sql`` of the pinned release), PostgreSQL only."""
    from procrastinate.schema import SchemaManager  # only here: plan and apply never import it

    run_script(conn, SchemaManager.get_schema())


def run_script(conn: Connection, script: str) -> None:
    """A multi-statement SQL script, in the caller's transaction: on the driver's cursor without
    parameters, psycopg sends it as one simple query and leaves its % signs alone."""
    with conn.connection.driver_connection.cursor() as cursor:  # type: ignore[union-attr]
        cursor.execute(script)
