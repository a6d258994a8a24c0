"""Throwaway PostgreSQL server for tests and benchmark scripts.

Why not pytest-postgresql: its executor runs initdb and pg_ctl as the current user, and CI runs as
root, which initdb refuses.

Self-contained: depends only on the standard library and psycopg (3). Does not
import pytest at module level, so benchmark scripts can use it too::

    from tests.pgserver import running_postgres
    with running_postgres() as pg:
        url = pg.create_database("bench")      # postgresql+psycopg://...
        ...

Binaries are located via ``$PG_BIN``, else ``pg_config --bindir``, else the
highest ``/usr/lib/postgresql/*/bin``. When running as root, the cluster is
owned by, and every server command runs as, the ``postgres`` OS user
(override with ``$PGSERVER_OS_USER``). The temp dir goes under /dev/shm if it
is a roomy tmpfs, else /tmp (override with ``$PGSERVER_TMPDIR``; when root it
must be traversable by that user, so not under /root).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Iterator, Optional

__all__ = [
    "PostgresNotAvailable",
    "PostgresStartError",
    "PostgresServer",
    "find_pg_bin",
    "start_postgres",
    "running_postgres",
    "ci_mode",
    "skip_or_fail",
]

DB_SUPERUSER = "postgres"
_SPEED_OPTS = "-F -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
_REQUIRED = ("initdb", "pg_ctl", "postgres")


class PostgresNotAvailable(RuntimeError):
    """PostgreSQL binaries (or a usable OS user) are not available here."""


class PostgresStartError(RuntimeError):
    """Binaries were found but the server could not be initialised/started."""


# --------------------------------------------------------------------------
# environment helpers
# --------------------------------------------------------------------------

def _has_binaries(bindir: str) -> bool:
    return all(os.access(os.path.join(bindir, b), os.X_OK) for b in _REQUIRED)


def find_pg_bin() -> str:
    """Return the PostgreSQL bin directory or raise PostgresNotAvailable."""
    env = os.environ.get("PG_BIN")
    if env:
        if _has_binaries(env):
            return env
        raise PostgresNotAvailable(
            f"$PG_BIN={env!r} does not contain executable {', '.join(_REQUIRED)}")
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True,
                                 text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out and _has_binaries(out):
            return out

    def version_key(path: str):
        v = path.split(os.sep)[-2]
        return [int(p) if p.isdigit() else -1 for p in re.split(r"[.]", v)]

    for cand in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version_key,
                       reverse=True):
        if _has_binaries(cand):
            return cand
    raise PostgresNotAvailable(
        "PostgreSQL server binaries not found: set $PG_BIN to the directory "
        "containing initdb/pg_ctl/postgres, put pg_config on PATH, or install "
        "them under /usr/lib/postgresql/<ver>/bin")


def ci_mode() -> bool:
    """True when the ``CI`` env var is set to a truthy value."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def skip_or_fail(reason: str) -> None:
    """In tests: pytest.fail under CI (must not silently skip), else pytest.skip."""
    import pytest  # lazy: keep this module importable without pytest

    if ci_mode():
        pytest.fail(f"PostgreSQL required in CI: {reason}", pytrace=False)
    pytest.skip(reason)


_MIN_SHM_FREE = 512 * 1024 * 1024


def _base_dir(as_root: bool) -> str:
    """Parent for the cluster's temp dir.

    $PGSERVER_TMPDIR if set; else /dev/shm when it is a roomy tmpfs (CREATE
    DATABASE is ~20x faster there than on ext4, startup ~2x); else /tmp when
    root (tempfile.gettempdir() could be under /root, which the postgres user
    can't traverse), else tempfile.gettempdir().
    """
    env = os.environ.get("PGSERVER_TMPDIR")
    if env:
        return env
    shm = "/dev/shm"
    try:
        st = os.statvfs(shm)
        if os.access(shm, os.W_OK | os.X_OK) and st.f_bavail * st.f_frsize >= _MIN_SHM_FREE:
            return shm
    except OSError:
        pass
    return "/tmp" if as_root else tempfile.gettempdir()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# server
# --------------------------------------------------------------------------

class PostgresServer:
    """A running throwaway cluster. Use start_postgres()/running_postgres()."""

    def __init__(self, bindir: str, tmpdir: str, run_as: Optional[pwd.struct_passwd]):
        self.bindir = bindir
        self.tmpdir = tmpdir
        self.datadir = os.path.join(tmpdir, "data")
        self.sockdir = os.path.join(tmpdir, "sock")
        self.logfile = os.path.join(tmpdir, "postgres.log")
        self.user = DB_SUPERUSER
        self.host = "127.0.0.1"
        self.port = 0
        self.dbname = "postgres"
        self.startup_seconds = 0.0
        self._run_as = run_as
        self._running = False

    # -- subprocess plumbing ------------------------------------------------
    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        kw = {}
        if self._run_as is not None:  # we are root: drop to the postgres user
            kw = dict(user=self._run_as.pw_uid, group=self._run_as.pw_gid,
                      extra_groups=[])
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        if self._run_as is not None:
            env.update(HOME=self._run_as.pw_dir or "/", USER=self._run_as.pw_name)
        cmd = [os.path.join(self.bindir, args[0]), *args[1:]]
        # cwd: must be accessible to the postgres user (cwd may be under /root)
        return subprocess.run(cmd, cwd=self.tmpdir, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout, **kw)

    def _log_tail(self, n: int = 30) -> str:
        try:
            with open(self.logfile, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return "(no log)"

    # -- lifecycle -------------------------------------------------------------
    def _initdb(self) -> None:
        r = self._run("initdb", "-D", self.datadir, "-U", self.user, "-A", "trust",
                      "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
        if r.returncode != 0:
            raise PostgresStartError(f"initdb failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")

    def _start(self) -> None:
        last = ""
        for _attempt in range(3):  # retry in case the free port got taken
            self.port = _free_port()
            opts = (f"{_SPEED_OPTS} -p {self.port} -k {self.sockdir} "
                    f"-c listen_addresses={self.host}")
            r = self._run("pg_ctl", "start", "-w", "-t", "60", "-D", self.datadir,
                          "-l", self.logfile, "-o", opts)
            if r.returncode == 0:
                self._running = True
                return
            last = f"{r.stdout}\n{r.stderr}\n--- log ---\n{self._log_tail()}"
            if "already in use" not in last:
                break
        raise PostgresStartError(f"pg_ctl start failed:\n{last}")

    def stop(self) -> None:
        """Stop the server (immediate mode) and delete its files. Idempotent."""
        if self._running:
            self._running = False
            try:
                r = self._run("pg_ctl", "stop", "-D", self.datadir, "-m", "immediate",
                              "-w", "-t", "30", timeout=60)
                failed = r.returncode != 0
            except (OSError, subprocess.SubprocessError):
                failed = True
            if failed:
                self._kill_postmaster()
        if os.path.isdir(self.tmpdir):
            shutil.rmtree(self.tmpdir, ignore_errors=True)
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)

    def _kill_postmaster(self) -> None:
        with contextlib.suppress(Exception):
            with open(os.path.join(self.datadir, "postmaster.pid")) as f:
                os.kill(int(f.readline().strip()), signal.SIGQUIT)

    @property
    def running(self) -> bool:
        return self._running

    # -- URLs / databases ---------------------------------------------------------
    def url_for(self, dbname: str) -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{dbname}"

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the default ``postgres`` database."""
        return self.url_for(self.dbname)

    @property
    def dsn(self) -> str:
        """libpq/psycopg conninfo for the default database."""
        return f"host={self.host} port={self.port} user={self.user} dbname={self.dbname}"

    def _admin(self, statement) -> None:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(statement)

    def create_database(self, name: str, template: str = "template0") -> str:
        """CREATE DATABASE name TEMPLATE template; return its SQLAlchemy URL.

        ``template`` can be a database you prepared (schema loaded) yourself;
        it must have no open connections while it is being copied.
        Uses STRATEGY FILE_COPY (fastest for small templates with fsync=off).
        """
        from psycopg import sql

        self._admin(sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
            sql.Identifier(name), sql.Identifier(template)))
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        """DROP DATABASE IF EXISTS name WITH (FORCE) (terminates connections)."""
        from psycopg import sql

        self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))

    def __enter__(self) -> "PostgresServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<PostgresServer {self.url} running={self._running}>"


def start_postgres() -> PostgresServer:
    """initdb + start a new cluster on a free 127.0.0.1 port.

    Raises PostgresNotAvailable if binaries / the postgres OS user are missing,
    PostgresStartError if they exist but the server fails to come up.
    The server is stopped at interpreter exit if stop() was not called.
    """
    t0 = time.monotonic()
    bindir = find_pg_bin()
    run_as = None
    if os.geteuid() == 0:
        os_user = os.environ.get("PGSERVER_OS_USER", "postgres")
        try:
            run_as = pwd.getpwnam(os_user)
        except KeyError:
            raise PostgresNotAvailable(
                f"running as root but OS user {os_user!r} does not exist "
                f"(initdb refuses to run as root); create it, e.g. "
                f"`useradd --system {os_user}`, or set $PGSERVER_OS_USER") from None
    tmpdir = tempfile.mkdtemp(prefix="reconciler-pg-", dir=_base_dir(run_as is not None))
    server = PostgresServer(bindir, tmpdir, run_as)
    os.mkdir(server.sockdir, 0o700)
    if run_as is not None:
        for p in (tmpdir, server.sockdir):
            os.chown(p, run_as.pw_uid, run_as.pw_gid)
    atexit.register(server.stop)
    try:
        server._initdb()
        server._start()
    except BaseException:
        server.stop()
        raise
    server.startup_seconds = time.monotonic() - t0
    return server


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Context manager: start a server, yield it, always stop it."""
    server = start_postgres()
    try:
        yield server
    finally:
        server.stop()


if __name__ == "__main__":  # manual smoke test: python3 -m tests.pgserver
    with running_postgres() as pg:
        print(pg.url, f"started in {pg.startup_seconds:.2f}s")
