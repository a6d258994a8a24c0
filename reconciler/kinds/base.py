"""What every resource kind is made of, and the pieces the kinds share.

A ``Kind`` is one frozen object that owns everything about a resource kind: the name of its manifest
spec's model (the models themselves are in ``kinds.specs``), its table, the order it is written in,
which fields refer to other kinds (and through which column), which are sensitive or have no column
of their own, and the functions that turn a manifest into an essence, an essence into row values, a
row into an essence and an essence back into a manifest. The pipeline (desired state, diff, apply,
snapshot, guards, the loader's reference checks, export, adopt, ``get``) loops over
``reconciler.kinds.KINDS`` instead of naming kinds.

A kind's SQLAlchemy ``Table`` is built on first use (``Kind.table``), and its rows are read
through a ``RowSource``, plain SQL text: a plan on SQLite reads the state with the standard
library's ``sqlite3`` and never imports SQLAlchemy (0.17 s of a 0.5 s plan).

This is the lowest layer above the LLM ports: it imports no other part of reconciler except
``errors`` and ``llm.ports`` (the manifest type is only named for type checkers).
"""

from __future__ import annotations

import abc
import functools
import itertools
import struct
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple, TypedDict

if TYPE_CHECKING:
    import uuid

    from pydantic import BaseModel
    from sqlalchemy import Column, Connection, MetaData, Table

    from reconciler.manifests.loader import Manifest

API_VERSION = "reconciler/v1"
NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
# The row's own name when it is not the manifest name (the seed's "Message Classifier", looked up
# by name by the service): export writes it, adopt and apply keep it in the name column.
ROW_NAME = "reconciler/row-name"
ROW_NAME_MAX = 255  # the name columns are VARCHAR(255)


class KindName(StrEnum):
    """The closed set of manifest kinds (values are what manifests write under ``kind:``; a
    ``StrEnum`` compares, hashes and formats as its value, so it keys the same dicts as the text)."""

    PROVIDER = "Provider"
    TASK = "Task"
    AGENT = "Agent"
    ASSIGNMENT = "Assignment"
    RUN = "Run"
    EXPERIMENT = "Experiment"


def utcnow() -> datetime:
    return datetime.now(UTC)


# -- tables: SQLAlchemy's, built on first use --------------------------------------------------


@functools.cache
def table_metadata() -> MetaData:
    """The one ``MetaData`` every table of reconciler's is in (``reconciler.state.tables``)."""
    from sqlalchemy import MetaData

    return MetaData()


_building = threading.Lock()


def kind_table(name: str, make: Callable[[str], Table]) -> Table:
    """The table ``name`` in ``table_metadata()``, made by ``make`` the first time it is asked for."""
    tables = table_metadata().tables
    table = tables.get(name)
    if table is None:
        with _building:  # two threads must not both define it
            table = tables.get(name)
            if table is None:
                table = make(name)
    return table


def id_column() -> Column[Any]:
    import uuid

    from sqlalchemy import Column, Uuid

    return Column("id", Uuid, primary_key=True, default=uuid.uuid4)


def timestamp_columns() -> tuple[Column[datetime], Column[datetime]]:
    from sqlalchemy import Column, DateTime

    return (
        Column("created_at", DateTime(timezone=True), nullable=False, default=utcnow),
        Column("updated_at", DateTime(timezone=True), nullable=False, default=utcnow),
    )


def named_table(name: str, *columns: Any) -> Table:
    """A configuration table as the seed's models make them: id, a unique name, the kind's own
    columns, then created_at and updated_at."""
    from sqlalchemy import Column, String, Table

    return Table(
        name, table_metadata(), id_column(), Column("name", String(255), nullable=False, unique=True, index=True), *columns, *timestamp_columns()
    )


def row_name(name: str, annotations: Mapping[str, str]) -> str:
    """The name a resource's row has in the database: ``reconciler/row-name`` or its manifest name."""
    return annotations.get(ROW_NAME) or name


def listing(row: Any, fields: tuple[str, ...], managed: Mapping[str, str], **extra: Any) -> dict[str, Any]:
    """One row as `reconciler get` lists it: ``fields`` (timestamps as ISO text), then ``extra``,
    whether reconciler manages it, and its id."""
    return {**{f: iso(getattr(row, f)) for f in fields}, **extra, "managed": str(row.id) in managed, "id": str(row.id)}


# -- manifest pieces every kind uses ----------------------------------------------------------


class Record:
    """A validated spec, or a model inside one, as plain data: the model's fields as attributes,
    in its declaration order, frozen. A ``Manifest``'s spec is one whether it was validated now or
    read back from the parse cache (``manifests/modelcodec``): the kinds read specs by attribute
    only, and a record serves that without pydantic, so a plan whose files are all in the cache
    never imports it (``kinds.specs``). ``model``: the name of the model in ``kinds.specs`` that
    validated it; each has its own record class (``record_class``)."""

    model: ClassVar[str] = ""

    def __init__(self, fields: dict[str, Any]) -> None:
        object.__setattr__(self, "__dict__", fields)

    if TYPE_CHECKING:  # its fields are its model's: any name, read as Any

        def __getattr__(self, name: str) -> Any: ...

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.__dict__ == self.__dict__

    __hash__ = None  # type: ignore[assignment]  # its fields may be dicts and lists

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_record, (self.model, self.__dict__))


@functools.cache
def record_class(model: str) -> type[Record]:
    """The record class of the model named ``model`` (``isinstance(value, record_class("FileRef"))``)."""
    return type(model, (Record,), {"model": model, "__module__": __name__})


def _rebuild_record(model: str, fields: dict[str, Any]) -> Record:
    return record_class(model)(fields)


def plain_dump(model: Any, *, exclude_none: bool = False) -> dict[str, Any]:
    """A ``Record`` (or a pydantic model) as dicts: what ``model_dump(exclude_none=...)`` gives,
    without pydantic's serializer. Fields in declaration order (a model's ``__dict__`` holds its
    fields in that order too), nested models dumped alike, lists, tuples and dicts copied
    (``exclude_none`` applies to model fields only, as pydantic's does)."""
    out: dict[str, Any] = {}
    for name, value in model.__dict__.items():
        if value is None and exclude_none:
            continue
        out[name] = _plain(value, exclude_none)
    return out


def _is_model(value: Any) -> bool:
    return isinstance(value, Record) or hasattr(type(value), "__pydantic_fields__")


def _plain(value: Any, exclude_none: bool) -> Any:
    if value.__class__ in _ATOMS:
        return value
    if isinstance(value, dict):
        return {k: _plain(v, exclude_none) for k, v in value.items()}
    if value.__class__ is list:
        return [_plain(v, exclude_none) for v in value]
    if value.__class__ is tuple:
        return tuple(_plain(v, exclude_none) for v in value)
    if _is_model(value):
        return plain_dump(value, exclude_none=exclude_none)
    return value


_ATOMS = frozenset((str, int, float, bool, type(None)))


# -- the kind object ----------------------------------------------------------------------------

ResourceKey = tuple[str, str]  # (kind, name)
Ids = Mapping[ResourceKey, "uuid.UUID"]  # (kind, name) -> row id, for references on write
Names = Mapping[str, Mapping[Any, str]]  # kind -> raw row id -> managed name, for references on read
Fingerprint = Callable[[dict[str, Any], "Manifest"], str]  # (secret reference, manifest) -> HMAC
Essence = Callable[["Manifest", Fingerprint | None], dict[str, Any]]  # see Kind.essence


@dataclass(frozen=True)
class Reference:
    """An essence field naming a resource of ``kind``, stored as that row's id in ``column``."""

    column: str
    kind: KindName


class RowRead(NamedTuple):
    """One row of a kind as the snapshot needs it: its own name, id text and essence (a named
    tuple: made for every row read, three times as fast as a frozen dataclass)."""

    name: str
    raw_id: Any  # as the driver returned it: the key other kinds' references use
    essence: dict[str, Any]
    secret_ciphertext: bytes | None = None


@dataclass(frozen=True)
class ExportedSpec:
    spec: dict[str, Any]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExportSource:
    """What export knows of one row: its essence now, what reconciler last applied (None for a
    row it does not manage), the name the manifest gets, and the exported name of any other row."""

    essence: dict[str, Any]
    applied: dict[str, Any] | None
    name: str
    exported_name: Callable[[str, str], str]  # (kind, name in the database) -> name in the manifests


ColumnType = Literal["json", "float"]  # a column a reader decodes (``RowSource.decoder``)


class RowSource(abc.ABC):
    """Plain SQL text in, the driver's values out: what the kinds' readers and the snapshot read
    through. ``reconciler.state.rows`` has one on a standard-library ``sqlite3`` connection (plan
    on SQLite) and one on an SQLAlchemy connection (PostgreSQL, and apply's and watch's write
    transactions), so each kind has one reader for both. Values are as the driver returns them: a
    UUID is 32 hex digits on SQLite and a ``uuid.UUID`` on PostgreSQL (``id_text``), a boolean
    0 or 1 on SQLite, and a JSON or float column is decoded by ``decoder``."""

    dialect: str  # "sqlite" or "postgresql"

    @abc.abstractmethod
    def rows(self, sql: str) -> Sequence[Sequence[Any]]:
        """Every row ``sql`` (no parameters) selects."""

    @abc.abstractmethod
    def table_names(self) -> set[str]:
        """The tables and views a query finds by their bare name."""

    @abc.abstractmethod
    def decoder(self, column_type: ColumnType) -> Callable[[Sequence[Any]], list[Any]] | None:
        """What turns the values of a ``column_type`` column as read (every row's, in a sequence:
        a column of 10,000 JSON texts is parsed faster together than one by one) into what
        SQLAlchemy's column type gives, NULLs kept (None: the values as read are that)."""


def select_sql(table: str, columns: Iterable[str], where: str = "") -> str:
    """A SELECT of plain columns, identifiers quoted as SQLite and PostgreSQL both read them."""
    listed = ", ".join(f'"{c}"' for c in columns)
    return f'SELECT {listed} FROM "{table}"' + (f" WHERE {where}" if where else "")


@dataclass(frozen=True)
class Kind:
    """Everything about one resource kind (see the module docstring)."""

    name: KindName
    table_name: str
    make_table: Callable[[str], Table] = field(compare=False, repr=False)  # SQLAlchemy's table, given its name (see ``table``)
    spec: str  # the name of its spec's model in ``kinds.specs`` (``spec_model``)
    # manifest (and the provider secret fingerprint function, or None) -> comparable essence
    essence: Essence
    # essence (plus "_"-prefixed payload) and the ids of every (kind, name) -> column values
    row_values: Callable[[dict[str, Any], Ids], dict[str, Any]]
    # the rows of this kind in the database, references already turned into names
    read: Callable[[RowSource, Names], list[RowRead]]
    # a row as read from the database -> the manifest spec export writes
    export: Callable[[ExportSource], ExportedSpec]
    references: Mapping[str, Reference] = field(default_factory=dict)
    sensitive: tuple[str, ...] = ()
    extra_fields: tuple[str, ...] = ()  # no column in the seed's table: kept in the bookkeeping's applied essence
    payload: Callable[[Manifest], dict[str, Any]] | None = None  # written by apply, not compared by the diff
    secret_source: Callable[[Manifest], dict[str, Any] | None] | None = None  # how apply re-reads a secret field
    secret_column: str | None = None  # where the encrypted secret of the sensitive field is stored
    validation_fields: tuple[str, ...] = ()  # a change to one of these makes the row's validation pending again
    named_rows: bool = True  # False: the row has no name column (an assignment is named by reconciler)
    natural_name: Callable[[dict[str, Any]], str] | None = None  # the name of an unnamed row nobody manages
    delete_first: bool = False  # its deletes go before its creates (they may free a unique pair the creates need)
    history: bool = False  # a record of what ran: never pruned or listed unmanaged, immutable once started
    stamps: Literal["created_updated", "assigned"] = "created_updated"
    create_defaults: Mapping[str, Any] = field(default_factory=dict)  # columns set only on create
    # column -> every value reconciler writes into it after a create or a change of a validation
    # field (a provider's validation status), so a plan can check them against the column's type
    status_values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    get_columns: tuple[str, ...] = ()  # `reconciler get PLURAL` table columns
    list_rows: Callable[[Connection, Mapping[str, str]], list[dict[str, Any]]] | None = None  # for `get`

    @property
    def spec_model(self) -> type[BaseModel]:
        """The pydantic model that validates this kind's spec: imports ``kinds.specs`` and pydantic,
        which only validating a document needs."""
        from reconciler.kinds import specs

        model: type[BaseModel] = getattr(specs, self.spec)
        return model

    @property
    def table(self) -> Table:
        """Its SQLAlchemy table (for writes and queries), built the first time it is asked for."""
        return kind_table(self.table_name, self.make_table)

    @property
    def plural(self) -> str:
        """The plural `get` accepts and export names its file after ("agents")."""
        return f"{self.name.lower()}s"

    @property
    def aliases(self) -> tuple[str, ...]:
        """The words `get`, --target and adopt accept for this kind."""
        return (self.name.lower(), self.plural)

    @property
    def keeps_row_names(self) -> bool:
        """Its rows may keep a name of their own (``reconciler/row-name``): they have a name column
        and are not found by their manifest name (as runs are)."""
        return self.named_rows and not self.history

    @property
    def managed_by_gitops(self) -> bool:
        """Listed by `get`, exportable and adoptable (runs are history, not configuration)."""
        return not self.history


def iso(v: Any) -> Any:
    """A timestamp as ISO 8601 text, to the second (listings); anything else as it is."""
    return v.isoformat(timespec="seconds") if hasattr(v, "isoformat") else v


def without_none(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if v is not None}


def inactive_flag(essence: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """Exports write ``is_active`` only when it is off (the default is on)."""
    if not essence.get("is_active", True):
        spec["is_active"] = False
    return spec


# -- reading and writing rows, shared by the kinds that map fields to columns one to one --------


def id_text(raw: Any) -> str:
    """The canonical text of a UUID as the driver reads it: 32 hex digits (SQLite), a
    ``uuid.UUID`` (PostgreSQL), or already dashed text (a seed database's own choice)."""
    if raw.__class__ is str:
        if len(raw) == 32:
            return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}".lower()
        import uuid

        return str(uuid.UUID(raw))
    return str(raw)


_HEX_UUID = struct.Struct("8s4s4s4s12s")  # 32 hex digits in the five groups of the dashed text


def id_texts(raws: Sequence[Any]) -> list[str]:
    """``id_text`` of each of a column's row ids: 32 hex digits each (SQLite, reconciler's rows)
    cut into their groups by C loops over the column, not a Python call per id; ids of any
    other form one by one."""
    try:
        hex_digits = "".join(raws).encode("ascii").lower()
    except (TypeError, UnicodeEncodeError):  # not text (a uuid.UUID), or not ASCII
        pass
    else:
        if set(map(len, raws)) == {32}:
            return list(map(bytes.decode, map(b"-".join, _HEX_UUID.iter_unpack(hex_digits))))
    return list(map(id_text, raws))


def column_reader(
    table_name: str,
    columns: tuple[str, ...],
    references: Mapping[str, Reference] = {},
    name_of: Callable[[dict[str, Any]], str] | None = None,
    types: Mapping[str, ColumnType] = {},
) -> Callable[[RowSource, Names], list[RowRead]]:
    """A ``Kind.read`` for a table whose essence fields are its columns (``name_of`` names rows
    of a table without a name column, from their essence; ``types``: the columns to decode)."""
    first = 1 if name_of else 2  # the essence columns' place in a row: after the id (and the name)
    sql = select_sql(table_name, ("id", *([] if name_of else ["name"]), *columns, *(ref.column for ref in references.values())))
    fields = (*columns, *references)  # an essence's keys, in the order of its values in a row
    active = columns.index("is_active") if "is_active" in columns else None
    decoded = tuple((columns.index(c), t) for c, t in types.items())

    def read(source: RowSource, names: Names) -> list[RowRead]:
        rows = source.rows(sql)
        if not rows:
            return []
        # column by column: C loops over a column's 10,000 values, not Python statements per value
        by_column = list(zip(*rows, strict=True))
        values: list[Iterable[Any]] = list(by_column[first:])  # the essence's, in the order of ``fields``
        if active is not None:
            values[active] = map(bool, values[active])  # a real bool, whatever the driver returns
        for i, column_type in decoded:
            decode = source.decoder(column_type)
            if decode is not None:
                values[i] = decode(by_column[first + i])
        for i, ref in enumerate(references.values(), start=len(columns)):  # target row ids -> their names
            values[i] = map(names.get(ref.kind, {}).get, by_column[first + i])
        essences = list(map(dict, map(zip, itertools.repeat(fields), zip(*values, strict=True))))
        row_names = map(name_of, essences) if name_of else by_column[1]
        return list(map(RowRead, row_names, by_column[0], essences))

    return read


def column_writer(columns: tuple[str, ...], references: Mapping[str, Reference] = {}) -> Callable[[dict[str, Any], Ids], dict[str, Any]]:
    """The ``Kind.row_values`` matching ``column_reader``: references become the target rows' ids."""

    def row_values(essence: dict[str, Any], ids: Ids) -> dict[str, Any]:
        values = {c: essence[c] for c in columns}
        for field_name, ref in references.items():
            values[ref.column] = ids[(ref.kind, essence[field_name])]
        return values

    return row_values


class Rows(TypedDict):
    """How a kind's rows are stored, as ``Kind(**rows, ...)`` takes it: the table, how an essence
    is written into it and read back, and which fields refer to other kinds."""

    table_name: str
    make_table: Callable[[str], Table]
    row_values: Callable[[dict[str, Any], Ids], dict[str, Any]]
    read: Callable[[RowSource, Names], list[RowRead]]
    references: Mapping[str, Reference]


def column_rows(
    table_name: str,
    make_table: Callable[[str], Table],
    columns: tuple[str, ...],
    references: Mapping[str, Reference] = {},
    name_of: Callable[[dict[str, Any]], str] | None = None,
    types: Mapping[str, ColumnType] = {},
) -> Rows:
    """The ``Rows`` of a table whose essence fields are its ``columns`` plus ``references``
    (``types``: the essence columns a reader decodes, checked against the table by a test)."""
    return Rows(
        table_name=table_name,
        make_table=make_table,
        row_values=column_writer(columns, references),
        read=column_reader(table_name, columns, references, name_of, types),
        references=references,
    )


def not_exported(plural: str) -> Callable[[ExportSource], ExportedSpec]:
    """The ``Kind.export`` of a history kind (export never asks it: it covers configuration only)."""

    def export(source: ExportSource) -> ExportedSpec:
        raise TypeError(f"{plural} are history, not configuration: they are not exported")

    return export


def plain_export(
    order: tuple[str, ...],
    references: Mapping[str, Reference] = {},
    defaults: Mapping[str, Any] = {},
) -> Callable[[ExportSource], ExportedSpec]:
    """A ``Kind.export`` that writes the essence's fields in ``order`` (None left out, references
    under their exported names); a NULL where the manifest needs a value gets ``defaults`` and a note."""

    def export(source: ExportSource) -> ExportedSpec:
        essence = source.essence
        spec: dict[str, Any] = {}
        notes = []
        for f in order:
            value = essence.get(f)
            if f in references and value is not None:
                value = source.exported_name(references[f].kind, value)
            if value is None and f in defaults:
                value = defaults[f]
                notes.append(f"{f} is NULL in the database; manifests need a value, so the default {value!r} is written")
            spec[f] = value
        return ExportedSpec(inactive_flag(essence, without_none(spec)), tuple(notes))

    return export
