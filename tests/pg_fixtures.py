"""pytest fixtures for a throwaway PostgreSQL server.

Use from tests/conftest.py with ``from tests.pg_fixtures import *`` or
``pytest_plugins = ["tests.pg_fixtures"]``.

* ``pg_server`` (session): one PostgresServer per test session (per xdist worker).
* ``pg_url`` (function): SQLAlchemy URL of a fresh database, dropped afterwards.

If PostgreSQL is unavailable the tests are skipped, or they fail when the
``CI`` env var is set. If the server doesn't start, the tests always fail.
"""

from __future__ import annotations

import uuid

import pytest

from tests.pgserver import PostgresNotAvailable, skip_or_fail, start_postgres

__all__ = ["pg_server", "pg_url"]


@pytest.fixture(scope="session")
def pg_server():
    try:
        server = start_postgres()
    except PostgresNotAvailable as exc:
        skip_or_fail(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def pg_url(pg_server):
    name = f"test_{uuid.uuid4().hex[:16]}"
    url = pg_server.create_database(name)
    try:
        yield url
    finally:
        pg_server.drop_database(name)
