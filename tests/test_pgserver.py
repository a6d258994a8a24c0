"""Tests for the throwaway PostgreSQL helper (tests/pgserver.py)."""

from __future__ import annotations

import os
import time

import pytest
import sqlalchemy as sa

from tests import pgserver
from tests.pg_fixtures import pg_server, pg_url  # noqa: F401  (fixtures)


def _engine(url):
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def test_find_pg_bin_respects_env(monkeypatch, tmp_path):
    monkeypatch.setenv("PG_BIN", str(tmp_path))
    with pytest.raises(pgserver.PostgresNotAvailable, match="PG_BIN"):
        pgserver.find_pg_bin()


def test_ci_mode(monkeypatch):
    for value, expected in [("", False), ("0", False), ("false", False),
                            ("1", True), ("true", True)]:
        monkeypatch.setenv("CI", value)
        assert pgserver.ci_mode() is expected
    monkeypatch.delenv("CI")
    assert pgserver.ci_mode() is False


def test_url_form(pg_server):
    assert pg_server.url == f"postgresql+psycopg://postgres@127.0.0.1:{pg_server.port}/postgres"
    print(f"\nsession server startup: {pg_server.startup_seconds:.3f}s")


def test_connect_and_create_table(pg_url):
    eng = _engine(pg_url)
    with eng.begin() as conn:
        assert conn.execute(sa.text("select current_setting('server_version_num')::int")).scalar() >= 150000
        assert conn.execute(sa.text("show fsync")).scalar() == "off"
        conn.execute(sa.text("create table t (id int primary key, name text)"))
        conn.execute(sa.text("insert into t values (1, 'a'), (2, 'b')"))
    with eng.connect() as conn:
        assert conn.execute(sa.text("select count(*) from t")).scalar() == 2
    eng.dispose()


@pytest.mark.parametrize("run", [1, 2])
def test_per_test_isolation(pg_url, run):
    # Same table name in each run: only passes if every test gets a fresh DB.
    eng = _engine(pg_url)
    with eng.begin() as conn:
        assert not sa.inspect(conn).has_table("isolated")
        conn.execute(sa.text("create table isolated (x int)"))
    eng.dispose()


def test_create_and_drop_database(pg_server):
    t0 = time.perf_counter()
    url = pg_server.create_database("scratch_db")
    created = time.perf_counter() - t0
    print(f"\ncreate_database: {created * 1000:.1f}ms")
    eng = _engine(url)
    conn = eng.connect()
    assert conn.execute(sa.text("select current_database()")).scalar() == "scratch_db"
    # drop_database must succeed even with a connection still open (FORCE);
    # that connection gets terminated.
    pg_server.drop_database("scratch_db")
    with pytest.raises(sa.exc.OperationalError):
        conn.execute(sa.text("select 1"))
    conn.invalidate()
    conn.close()
    eng.dispose()
    with _engine(pg_server.url).connect() as conn:
        assert conn.execute(
            sa.text("select count(*) from pg_database where datname = 'scratch_db'")).scalar() == 0
    pg_server.drop_database("scratch_db")  # idempotent


def test_prepared_template(pg_server):
    tpl = pg_server.create_database("tpl_db")
    eng = _engine(tpl)
    with eng.begin() as conn:
        conn.execute(sa.text("create table seeded (x int)"))
    eng.dispose()
    url = pg_server.create_database("from_tpl", template="tpl_db")
    eng = _engine(url)
    with eng.connect() as conn:
        assert sa.inspect(conn).has_table("seeded")
    eng.dispose()
    pg_server.drop_database("from_tpl")
    pg_server.drop_database("tpl_db")


def test_start_stop_cleans_up():
    try:
        t0 = time.perf_counter()
        server = pgserver.start_postgres()
    except pgserver.PostgresNotAvailable as exc:
        pgserver.skip_or_fail(str(exc))
    elapsed = time.perf_counter() - t0
    print(f"\nstart_postgres(): {elapsed:.3f}s")
    assert elapsed < 30
    tmpdir, datadir = server.tmpdir, server.datadir
    with open(os.path.join(datadir, "postmaster.pid")) as f:
        pid = int(f.readline())
    with _engine(server.url).connect() as conn:
        assert conn.execute(sa.text("select 1")).scalar() == 1
    if os.geteuid() == 0:
        st = os.stat(datadir)
        import pwd
        assert pwd.getpwuid(st.st_uid).pw_name == os.environ.get("PGSERVER_OS_USER", "postgres")
    server.stop()
    assert not server.running
    assert not os.path.exists(tmpdir)
    deadline = time.monotonic() + 10
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pid_alive(pid)
    with pytest.raises(sa.exc.OperationalError):
        with _engine(server.url).connect():
            pass
    server.stop()  # idempotent


def test_context_manager():
    try:
        with pgserver.running_postgres() as server:
            with _engine(server.url).connect() as conn:
                assert conn.execute(sa.text("select 1")).scalar() == 1
    except pgserver.PostgresNotAvailable as exc:
        pgserver.skip_or_fail(str(exc))
    assert not os.path.exists(server.tmpdir)


def _pid_alive(pid):
    # A zombie (reparented, not yet reaped) counts as dead.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
