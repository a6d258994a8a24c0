"""Read the database into plain, comparable snapshots ("essences"): no ids, no timestamps, and
references by name, the same shape as the desired state built from manifests.

The read is plain SQL text through a ``RowSource`` (``state.rows``): a plan on SQLite reads the
file with the standard library's ``sqlite3`` (``load_state``) and imports no SQLAlchemy; an
SQLAlchemy connection (PostgreSQL, apply's and watch's transactions) gives the same snapshot."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from reconciler.kinds import KINDS, Kind
from reconciler.kinds.base import ROW_NAME, RowSource, id_text, select_sql
from reconciler.kinds.provider import ciphertext_digest
from reconciler.state.columns import NO_ENUMS, DbColumns, reflect_columns
from reconciler.state.jsoncodec import canonical_bytes
from reconciler.state.rows import ConnectionRows, SqliteRows

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

ResourceKey = tuple[str, str]
__all__ = ["ActualResource", "StateSnapshot", "ciphertext_digest", "load_snapshot", "load_state", "read_snapshot"]

# Fields that have no column in the seed's tables; they live only in the bookkeeping's applied essence.
EXTRA_FIELDS: dict[str, tuple[str, ...]] = {k.name: k.extra_fields for k in KINDS if k.extra_fields}
SENSITIVE_FIELDS: dict[str, tuple[str, ...]] = {k.name: k.sensitive for k in KINDS if k.sensitive}


@dataclass(frozen=True)
class ActualResource:
    kind: str
    name: str
    row_id: str
    essence: dict[str, Any]
    managed: bool
    applied: dict[str, Any] | None = None  # what reconciler last applied (managed rows only)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    apply_id: int | None = None
    secret_digest: str | None = None  # digest of the ciphertext in the database now
    # the ciphertext itself, so a plan can check it decrypts under the configured key; never rendered
    secret_ciphertext: bytes | None = field(default=None, repr=False, compare=False)
    row_name: str | None = None  # the row's own name, when it is not the name reconciler manages it by

    @property
    def key(self) -> ResourceKey:
        return (self.kind, self.name)

    @property
    def db_name(self) -> str:
        """The row's name in the database now."""
        return self.row_name or self.name

    @property
    def applied_row_name(self) -> str:
        """The row name reconciler last wrote (kept by ``reconciler/row-name``, else the manifest name)."""
        return self.annotations.get(ROW_NAME) or self.name


@dataclass(frozen=True)
class StateSnapshot:
    resources: dict[ResourceKey, ActualResource]
    fingerprint: str
    # managed resources whose row was deleted outside reconciler: key -> apply that last wrote it
    vanished: dict[ResourceKey, int | None] = field(default_factory=dict)
    # the database's own column types (PostgreSQL enums), read with the rows; not in the fingerprint
    columns: DbColumns = field(default=NO_ENUMS, compare=False)

    @classmethod
    def empty(cls) -> StateSnapshot:
        return cls({}, fingerprint_of({}))


def fingerprint_of(resources: dict[ResourceKey, ActualResource]) -> str:
    """A hash of everything a plan depends on, to refuse applying a plan to a changed database."""
    h = hashlib.sha256()
    for key in sorted(resources):
        r = resources[key]
        # list(key), not the tuple: a tuple never reads back equal, which sends canonical_bytes to its slower path
        state = [list(key), r.row_id, r.managed, r.essence, r.applied, r.labels, r.annotations]
        h.update(canonical_bytes(state if r.row_name is None else [*state, r.row_name]))
    return h.hexdigest()


def load_snapshot(engine: Engine | None) -> StateSnapshot:
    if engine is None:
        return StateSnapshot.empty()
    with engine.connect() as conn:
        return read_snapshot(conn)


def load_state(db: str | None) -> StateSnapshot:
    """The state a read-only command compares with, as ``open_engine(db, create=False)`` and
    ``load_snapshot`` read it (an absent or empty database is an empty state, an unknown schema
    revision is refused): a plain SQLite URL through ``sqlite3``, any other through an engine."""
    from reconciler.state.db import open_sqlite_state, plain_sqlite_url, translate_db_errors

    plain = plain_sqlite_url(db)
    if plain is None:
        from reconciler.state.db import database_url, open_engine

        engine = open_engine(db, create=False)
        with translate_db_errors(database_url(db), "reading the current state"):
            return load_snapshot(engine)
    conn = open_sqlite_state(*plain)
    if conn is None:
        return StateSnapshot.empty()
    try:
        with translate_db_errors(plain[0], "reading the current state"):
            return read_snapshot(SqliteRows(conn))
    finally:
        conn.close()


def _existing_tables(source: RowSource) -> set[str] | None:
    """None when reconciler's schema is in place; else the tables that exist (a seed database)."""
    tables = source.table_names()
    return None if BOOKKEEPING_TABLE in tables else tables


class _Book:
    """One bookkeeping row, its row id as canonical text."""

    __slots__ = ("annotations", "applied", "apply_id", "kind", "labels", "name", "row_id", "secret_digest")

    def __init__(self, row: Any, decode: Callable[[Any], Any]) -> None:
        self.kind, self.name, raw, applied, labels, annotations, self.secret_digest, self.apply_id = row
        self.row_id = id_text(raw)
        self.applied, self.labels, self.annotations = decode(applied), decode(labels), decode(annotations)


def _same(value: Any) -> Any:
    return value


BOOKKEEPING_TABLE = "reconciler_resources"  # state.tables.reconciler_resources (a test keeps them equal)
_BOOKKEEPING = select_sql(BOOKKEEPING_TABLE, ("kind", "name", "row_id", "applied", "labels", "annotations", "secret_digest", "apply_id"))


def _bookkeeping(source: RowSource) -> list[_Book]:
    decode = source.decoder("json") or _same  # PostgreSQL's driver decodes JSON itself
    return [_Book(row, decode) for row in source.rows(_BOOKKEEPING)]


def read_snapshot(conn: Connection | RowSource) -> StateSnapshot:
    """Every kind's rows, in dependency order so references can be named, merged with the
    bookkeeping: a managed row is known by the name reconciler manages it by. ``conn``: an
    SQLAlchemy connection (read through ``ConnectionRows``) or any ``RowSource``."""
    source = conn if isinstance(conn, RowSource) else ConnectionRows(conn)
    tables = _existing_tables(source)
    books = _bookkeeping(source) if tables is None else []  # one per (kind, name): the table's primary key
    history = {str(k.name) for k in KINDS if k.history}  # found by name, not by row id
    by_name = {(m.kind, m.name): m for m in books if m.kind in history}
    by_row = {(m.kind, m.row_id): m for m in books}

    resources: dict[ResourceKey, ActualResource] = {}
    names: dict[str, dict[Any, str]] = {}
    for k in KINDS:
        if tables is not None and (k.history or k.table_name not in tables):
            continue  # a seed database has analysis_runs without our columns: runs are not managed there
        names[k.name] = of_kind = {}
        kind = str(k.name)
        for row in k.read(source, names):
            row_id = id_text(row.raw_id)
            if k.history:
                book = by_name.get((kind, row.name))
                if book is not None and book.row_id != row_id:
                    book = None
            else:
                book = by_row.get((kind, row_id))
            resource = _resource(k, kind, row.name, row_id, row.essence, book, row.secret_ciphertext)
            resources[(kind, resource.name)] = resource
            of_kind[row.raw_id] = resource.name
    seen = {(r.kind, r.row_id) for r in resources.values() if r.managed}
    vanished = {(m.kind, m.name): m.apply_id for m in books if (m.kind, m.row_id) not in seen}
    return StateSnapshot(resources, fingerprint_of(resources), vanished, _db_columns(source))


def _db_columns(source: RowSource) -> DbColumns:
    """The database's enum columns (PostgreSQL only: its reflection is SQLAlchemy's)."""
    if not isinstance(source, ConnectionRows) or source.dialect != "postgresql":
        return NO_ENUMS
    return reflect_columns(source.connection)


def _resource(k: Kind, kind: str, name: str, row_id: str, essence: dict[str, Any], book: _Book | None, ciphertext: bytes | None) -> ActualResource:
    """One row under the name reconciler manages it by, with what it last applied."""
    digest = ciphertext_digest(ciphertext) if ciphertext is not None else None
    if book is None:
        for extra in k.extra_fields:
            essence[extra] = None
        return ActualResource(kind, name, row_id, essence, False, secret_digest=digest if k.sensitive else None, secret_ciphertext=ciphertext)
    row_name = None
    applied = book.applied or {}
    if k.history:
        essence = {**applied, **essence}
    else:
        if k.named_rows and name != book.name:
            row_name = name  # kept by reconciler/row-name, or renamed outside reconciler
        for extra in k.extra_fields:
            essence[extra] = applied.get(extra)
        for sensitive in k.sensitive:
            # unchanged since we wrote it: the applied reference and HMAC still describe it
            if essence.get(sensitive) is not None and digest == book.secret_digest:
                essence[sensitive] = applied.get(sensitive)
    return ActualResource(
        kind,
        book.name,
        row_id,
        essence,
        True,
        book.applied,
        book.labels or {},
        book.annotations or {},
        book.apply_id,
        digest if k.sensitive else None,
        ciphertext,
        row_name,
    )
