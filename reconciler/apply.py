"""Execute a plan against the database in one transaction: all or nothing.

The caller holds the apply lock (``reconciler.state.lock.apply_lock``). Rows are written in bulk,
one statement per (action, kind) group, with ids generated here, so there are no per-resource round
trips. The plan is re-checked against the database inside the transaction, so a plan made against
a different state is refused instead of half-applied.
"""

from __future__ import annotations

import abc
import contextlib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from typing import TYPE_CHECKING, Any

from reconciler.errors import ReconcilerError, StalePlan
from reconciler.kinds import BY_NAME, Kind
from reconciler.kinds.base import row_name, utcnow
from reconciler.plan.enums import enum_shortfalls, refusal
from reconciler.plan.model import Action, Change, EnumShortfall, Plan
from reconciler.state.columns import add_enum_values
from reconciler.state.db import SqliteFile, sqlite_write_transaction
from reconciler.state.history import record_operation
from reconciler.state.rows import SqliteRows
from reconciler.state.snapshot import BOOKKEEPING_TABLE, StateSnapshot, ciphertext_digest, read_snapshot
from reconciler.state.write import RowWriter, SqlalchemyWriter, SqliteWriter

if TYPE_CHECKING:
    import sqlite3

    from sqlalchemy import Connection, Engine

    from reconciler.state.columns import DbColumns
    from reconciler.state.kept import KeptSnapshot, KeptSqliteState


@dataclass(frozen=True)
class ApplyMeta:
    """Who applied what, from where: recorded in the history."""

    user: str
    command: str = "apply"
    source: str = ""
    git: dict[str, Any] | None = None


@dataclass(frozen=True)
class ApplyResult:
    apply_id: int | None
    created: int
    updated: int
    deleted: int
    changed_providers: tuple[str, ...]
    runs_to_start: tuple[str, ...] = ()  # runs created or changed with trigger: on_apply
    extended: tuple[EnumShortfall, ...] = ()  # enum values added before the apply (--extend-enums)


SecretResolver = Callable[[Change], tuple[bytes, str]]  # change -> (ciphertext, hmac)


def execute_plan(
    engine: Engine | SqliteFile, plan: Plan, meta: ApplyMeta, encrypt_secret: SecretResolver | None, kept: KeptSqliteState | None = None
) -> ApplyResult:
    """Apply ``plan`` in a single transaction; refuse if the database no longer matches it
    (``kept``: the SQLite connection and state it was planned with, see ``plan_and_execute``)."""

    def checked(snapshot: StateSnapshot) -> Plan:
        if snapshot.fingerprint != plan.state_fingerprint:
            raise _stale()
        return plan

    return plan_and_execute(engine, checked, meta, lambda _plan: encrypt_secret, kept)[2]


def plan_and_execute(
    target: Engine | SqliteFile,
    make_plan: Callable[[StateSnapshot], Plan],
    meta: ApplyMeta,
    encrypter: Callable[[Plan], SecretResolver | None],
    kept: KeptSnapshot | KeptSqliteState | None = None,
) -> tuple[Plan, StateSnapshot, ApplyResult]:
    """Read the state, make the plan from it (``make_plan`` may raise to refuse) and apply it, all
    in one write transaction (on SQLite ``BEGIN IMMEDIATE``: no other writer between the read and
    the writes). ``execute_plan`` passes a plan made earlier and refuses it if the state read here
    has another fingerprint; ``watch``, which asks nobody to confirm, plans here and so reads the
    state once per change instead of twice. ``encrypter`` gives the secret encrypter the plan
    needs; it runs before anything is written. ``kept`` (watch): the connection and the snapshot
    kept since the last change, reused when nobody else committed since. ``target``: an engine, or
    a SQLite file written through ``sqlite3`` (`apply` without SQLAlchemy; ``kept``: the connection
    and snapshot it planned with)."""
    started = utcnow()
    with _write_transaction(target, kept) as transaction:
        snapshot = transaction.read()
        plan = make_plan(snapshot)
        if plan.is_empty:
            return plan, snapshot, ApplyResult(None, 0, 0, 0, ())
        if kept is not None:
            kept.forget()  # this connection writes now, and SQLite's marker never shows its own commits
        shortfalls = enum_shortfalls(plan.changes, snapshot.columns)
        if shortfalls:  # a saved plan, or --extend-enums not given: PostgreSQL would refuse the rows
            raise refusal(shortfalls)
        encrypt_secret = encrypter(plan)
        writer = transaction.writer(snapshot.columns)
        apply_id = _record_history(writer, plan, meta, started)
        _write_changes(writer, plan, snapshot, apply_id, encrypt_secret)
    s = plan.summary()
    providers = tuple(c.name for c in plan.changes if BY_NAME[c.kind].validation_fields and c.action is not Action.DELETE)
    runs = tuple(  # experiments as experiment/NAME: a run and an experiment may share a name
        c.name if c.kind == "Run" else f"{c.kind.lower()}/{c.name}"
        for c in plan.changes
        if BY_NAME[c.kind].history and c.action is not Action.DELETE and (c.desired or {}).get("trigger") == "on_apply"
    )
    return plan, snapshot, ApplyResult(apply_id, s["create"], s["update"], s["delete"], providers, runs)


class _Transaction(abc.ABC):
    """A write transaction: the state read in it, and the writer of its rows."""

    @abc.abstractmethod
    def read(self) -> StateSnapshot: ...

    @abc.abstractmethod
    def writer(self, columns: DbColumns) -> RowWriter: ...


class _SqliteTransaction(_Transaction):
    def __init__(self, conn: sqlite3.Connection, kept: KeptSqliteState | None) -> None:
        self.conn, self.kept = conn, kept

    def read(self) -> StateSnapshot:
        return read_snapshot(SqliteRows(self.conn)) if self.kept is None else self.kept.read(self.conn)

    def writer(self, columns: DbColumns) -> RowWriter:
        return SqliteWriter(self.conn)


class _EngineTransaction(_Transaction):
    def __init__(self, conn: Connection, kept: KeptSnapshot | None) -> None:
        self.conn, self.kept = conn, kept

    def read(self) -> StateSnapshot:
        return read_snapshot(self.conn) if self.kept is None else self.kept.read(self.conn, read_snapshot)

    def writer(self, columns: DbColumns) -> RowWriter:
        return SqlalchemyWriter(self.conn, columns)


@contextlib.contextmanager
def _write_transaction(target: Engine | SqliteFile, kept: KeptSnapshot | KeptSqliteState | None) -> Iterator[_Transaction]:
    from reconciler.state.kept import KeptSnapshot, KeptSqliteState

    if isinstance(target, SqliteFile):
        assert kept is None or isinstance(kept, KeptSqliteState)
        with sqlite_write_transaction(target, kept.connection() if kept is not None else None) as sqlite_conn:
            yield _SqliteTransaction(sqlite_conn, kept)
        return
    assert kept is None or isinstance(kept, KeptSnapshot)
    with target.connect() if kept is None else contextlib.nullcontext(kept.connection()) as conn:
        conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            yield _EngineTransaction(conn, kept)


def _stale() -> StalePlan:
    return StalePlan(
        "the database changed after this plan was made; applying it could undo those changes",
        hint="make a new plan (reconciler plan ... --out FILE) and apply that",
    )


def extend_enums(engine: Engine, plan: Plan, meta: ApplyMeta) -> tuple[EnumShortfall, ...]:
    """Add the values ``plan`` needs that the database's enums lack, in a transaction of its own,
    recorded in history (``extend-enums``), committed before the apply's transaction uses them.

    Killed between the two, the database keeps the added values and their history entry, and its
    configuration is the state before; the next apply finds the values there and adds nothing.
    (PostgreSQL cannot remove an enum value, so this is as far back as it can go.)"""
    with engine.connect() as conn, conn.begin():
        snapshot = read_snapshot(conn)
        if snapshot.fingerprint != plan.state_fingerprint:  # refused now rather than after extending
            raise _stale()
        columns = snapshot.columns
        needed = enum_shortfalls(plan.changes, columns)
        if not needed:
            return ()
        for s in needed:
            add_enum_values(conn, columns.enums[(s.table, s.column)], s.missing)
        details = {"extended_enums": [s.to_dict() for s in needed]}
        record_operation(conn, command="extend-enums", user=meta.user, details=details, source=meta.source, git=meta.git)
    return needed


def _record_history(writer: RowWriter, plan: Plan, meta: ApplyMeta, started: datetime) -> int:
    s = plan.summary()
    return record_operation(
        writer,
        command=meta.command,
        user=meta.user,
        details=plan.to_dict(),
        started=started,
        source=meta.source,
        git=meta.git,
        created=s["create"],
        updated=s["update"],
        deleted=s["delete"],
    )


class _Applied(dict[tuple[str, ...], tuple[str, ...]]):
    """What bookkeeping keeps of a change's desired values: all but the private ``_`` keys, in their
    order. The keys without the private ones are found once per distinct set of keys (the changes of
    a kind share one): a test of every key of 10,000 changes took half of this."""

    def __missing__(self, keys: tuple[str, ...]) -> tuple[str, ...]:
        public = self[keys] = tuple(k for k in keys if not k.startswith("_"))
        return public

    def of(self, desired: dict[str, Any]) -> dict[str, Any]:
        keys = tuple(desired)
        public = self[keys]
        return dict(desired) if len(public) == len(keys) else {k: desired[k] for k in public}


class _RowIds(dict[tuple[str, str], uuid.UUID]):
    """(kind, name) -> row id: the rows this apply wrote, else the snapshot's row, made a UUID only
    when a reference asks for it (a UUID for each of 10,000 rows took longer than writing one change)."""

    def __init__(self, snapshot: StateSnapshot) -> None:
        super().__init__()
        self._resources = snapshot.resources

    def __missing__(self, key: tuple[str, str]) -> uuid.UUID:
        row_id = self[key] = uuid.UUID(self._resources[key].row_id)
        return row_id


def _write_changes(writer: RowWriter, plan: Plan, snapshot: StateSnapshot, apply_id: int, encrypt_secret: SecretResolver | None) -> None:
    now = utcnow()
    ids = _RowIds(snapshot)
    book_rows: list[dict[str, Any]] = []
    book_delete: list[tuple[str, str]] = []
    applied = _Applied()
    for (action, kind), group in groupby(plan.changes, key=lambda c: (c.action, c.kind)):
        changes = list(group)
        k = BY_NAME[kind]
        if action is Action.DELETE:
            writer.delete(k.table_name, "id", [uuid.UUID(c.row_id) for c in changes if c.row_id])
            book_delete += [c.key for c in changes]
            continue
        create = action is Action.CREATE
        if create:  # a created row gets its id, the stamps and the kind's defaults (its values win over those)
            stamp = {"assigned_at": now} if k.stamps == "assigned" else {"created_at": now, "updated_at": now}
            defaults = k.create_defaults.items()
        else:
            stamp = {} if k.stamps == "assigned" else {"updated_at": now}
        rows = []
        for c in changes:
            assert c.desired is not None
            row_id = uuid.UUID(c.row_id) if c.row_id else uuid.uuid4()
            ids[c.key] = row_id
            values = k.row_values(c.desired, ids)
            if k.named_rows:  # a row may keep the name its service knows it by (reconciler/row-name)
                values["name"] = row_name(c.name, c.annotations) if k.keeps_row_names else c.name
            digest = None
            if k.secret_column is not None:
                digest, secret_values = _secret_columns(k, c, snapshot, encrypt_secret)
                values.update(secret_values)
            if create:
                for column, default in defaults:
                    values.setdefault(column, default)
                values["id"] = row_id
                values.update(stamp)
            else:
                values["_id"] = row_id
            rows.append(values)
            book_rows.append(
                {
                    "kind": kind,
                    "name": c.name,
                    "row_id": row_id,
                    "applied": applied.of(c.desired),
                    "labels": c.labels,
                    "annotations": c.annotations,
                    "secret_digest": digest,
                    "apply_id": apply_id,
                    "updated_at": now,
                }
            )
            book_delete.append(c.key)  # a create may replace bookkeeping whose row was deleted out of band
        if create:
            writer.insert(k.table_name, rows)
        else:
            # one executemany per distinct column set (a provider whose key is unchanged keeps its ciphertext)
            for _columns, same in groupby(sorted(rows, key=lambda r: tuple(sorted(r))), key=lambda r: tuple(sorted(r))):
                writer.update(k.table_name, list(same), stamp)
    _write_bookkeeping(writer, book_delete, book_rows)


def _secret_columns(k: Kind, c: Change, snapshot: StateSnapshot, encrypt_secret: SecretResolver | None) -> tuple[str | None, dict[str, Any]]:
    """(digest for bookkeeping, columns to write) for a kind's sensitive field (a provider's api_key)."""
    d = c.desired or {}
    (field_name,) = k.sensitive
    column = k.secret_column
    assert column is not None
    touched = c.action is Action.CREATE or any(f.field in k.validation_fields for f in c.fields)
    status = {"validation_status": "pending", "validation_error": None, "validated_at": None} if touched and k.validation_fields else {}
    if d.get(field_name) is None:
        return None, {column: None, **status}
    key_changed = c.action is Action.CREATE or any(f.field == field_name for f in c.fields)
    if not key_changed:
        current = snapshot.resources.get(c.key)
        return (current.secret_digest if current is not None else None), status
    if encrypt_secret is None:
        raise ReconcilerError(f"{k.name.lower()} {c.name!r}: no secret key available to encrypt its {field_name}")
    token, mac = encrypt_secret(c)
    if mac != d[field_name]["hmac"]:
        raise StalePlan(
            f"{k.name.lower()} {c.name!r}: the {field_name} it refers to ({d[field_name]['ref']}) changed after the plan was made",
            hint="make a new plan and apply that",
        )
    return ciphertext_digest(token), {column: token, **status}


def _write_bookkeeping(writer: RowWriter, deletes: list[tuple[str, str]], rows: list[dict[str, Any]]) -> None:
    for kind, group in groupby(sorted(deletes), key=lambda k: k[0]):
        writer.delete(BOOKKEEPING_TABLE, "name", [n for _, n in group], where={"kind": kind})
    writer.insert(BOOKKEEPING_TABLE, rows)
