"""Adopt: put rows reconciler never managed under management, in one transaction, under the lock.

The bookkeeping records each row's current essence as "last applied", so the next plan of the
exported manifests shows no changes and later out-of-band edits show up as drift. A row whose name
is not a valid manifest name is managed by the slug ``reconciler export`` wrote for it and keeps its
own name in the database (recorded as the annotation ``reconciler/row-name``, as export writes it):
the service that made it looks rows up by name. ``rename=True`` (``adopt --rename``) renames such
rows to their slugs instead.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, update

from reconciler.errors import Problem, ReconcilerError
from reconciler.gitops.export import export_names, placeholder_env
from reconciler.kinds import BY_NAME
from reconciler.kinds.base import ROW_NAME
from reconciler.kinds.provider import PROVIDER
from reconciler.plan.guards import Selector, parse_selector
from reconciler.state.history import record_operation
from reconciler.state.snapshot import ActualResource, StateSnapshot, read_snapshot
from reconciler.state.tables import reconciler_resources, utcnow

ResourceKey = tuple[str, str]


@dataclass(frozen=True)
class Adoption:
    kind: str
    name: str
    row_id: str
    renamed_from: str | None = None
    row_name: str | None = None  # the row's own name, kept in the database (not a manifest name)
    secret_note: str = ""


@dataclass(frozen=True)
class AdoptResult:
    apply_id: int | None
    adopted: tuple[Adoption, ...]
    already_managed: tuple[str, ...]


def choose(snapshot: StateSnapshot, selectors: list[Selector] | None) -> tuple[list[tuple[ActualResource, str]], list[str]]:
    """(unmanaged rows to adopt with their manifest name, already-managed matches); None = all.
    A selector matches a row by its manifest name or by its name in the database."""
    names = export_names(snapshot)
    chosen: dict[str, tuple[ActualResource, str]] = {}
    managed: list[str] = []
    problems = []
    for selector in selectors if selectors else [None]:  # None: every row
        hit = False
        for key, r in sorted(snapshot.resources.items()):
            if selector is not None and not (selector.matches((r.kind, names[key])) or selector.matches(key)):
                continue
            hit = True
            if r.managed:
                managed.append(f"{r.kind.lower()}/{r.name}")
            else:
                chosen[r.row_id] = (r, names[key])
        if selector is not None and not hit:
            problems.append(Problem(f"{selector.text!r} matches nothing in the database", hint="list rows with `reconciler get KIND`"))
    if problems:
        raise ReconcilerError(problems)
    return list(chosen.values()), sorted(set(managed))


def _secret_fingerprint(token: bytes | None, provider: str) -> tuple[str | None, str]:
    """The HMAC of the key in the database, if our secret key can decrypt it (the seed's Fernet key)."""
    if token is None:
        return None, ""
    from reconciler.providers.secrets import load_secret_box

    try:
        box = load_secret_box(create=False)
        return box.fingerprint(box.decrypt(token, provider)), ""
    except ReconcilerError:
        return None, "its API key cannot be decrypted with reconciler's secret key; the first apply re-encrypts it from the manifest's reference"


def _check_names(snapshot: StateSnapshot, chosen: list[tuple[ActualResource, str]]) -> None:
    """Two rows must not end up under one manifest name ("Message Classifier" and "message-classifier")."""
    problems = []
    taken: dict[tuple[str, str], str] = {}
    for r, name in chosen:
        other = snapshot.resources.get((r.kind, name))
        clash = taken.get((r.kind, name)) or (other.db_name if other is not None and other.row_id != r.row_id else None)
        if clash is not None:
            problems.append(
                Problem(
                    f"cannot adopt {r.kind} {r.name!r} as {name!r}: the {r.kind.lower()} {clash!r} has that name too",
                    hint="rename one of the two rows in the database first (manifest names are lowercase slugs)",
                )
            )
        taken[(r.kind, name)] = r.name
    if problems:
        raise ReconcilerError(problems)


def _renames(conn: Connection, chosen: list[tuple[ActualResource, str]]) -> dict[str, str]:
    renamed = {}
    for r, name in chosen:
        if not BY_NAME[r.kind].named_rows or name == r.name:
            continue
        table = BY_NAME[r.kind].table
        conn.execute(update(table).where(table.c.id == uuid.UUID(r.row_id)).values(name=name))
        renamed[r.row_id] = r.name
    return renamed


def adopt(engine: Engine, selectors: list[str] | None, user: str, *, rename: bool = False) -> AdoptResult:
    """Adopt the unmanaged rows ``selectors`` match (KIND/NAME, globs), or all of them when None.
    A row whose name is not a manifest name keeps it, unless ``rename``."""
    parsed = [parse_selector(s, "adopt") for s in selectors] if selectors is not None else None
    with engine.connect() as conn:
        conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            before = read_snapshot(conn)
            chosen, managed = choose(before, parsed)
            if not chosen:
                return AdoptResult(None, (), tuple(managed))
            _check_names(before, chosen)
            renamed = _renames(conn, chosen) if rename else {}
            wanted = {r.row_id: name for r, name in chosen}
            after = {r.row_id: r for r in read_snapshot(conn).resources.values()}
            tokens = _provider_tokens(conn, [rid for rid in wanted if after[rid].kind == PROVIDER.name])
            now = utcnow()
            adoptions, books = [], []
            names = {(r.kind, r.name): name for r, name in chosen}  # rows adopted now: their names in the database -> manifest names
            for row_id, name in wanted.items():
                r = after[row_id]
                applied: dict[str, Any] = dict(r.essence)
                for f, ref in BY_NAME[r.kind].references.items():  # what it refers to, by the names being adopted
                    if applied.get(f) is not None:
                        applied[f] = names.get((ref.kind, applied[f]), applied[f])
                note = ""
                if BY_NAME[r.kind].secret_column is not None and applied.get("api_key") is not None:
                    mac, note = _secret_fingerprint(tokens.get(row_id), name)
                    applied["api_key"] = {"ref": f"env:{placeholder_env(name)}", "hmac": mac}
                kept = r.db_name if BY_NAME[r.kind].keeps_row_names and r.db_name != name else None
                adoptions.append(Adoption(r.kind, name, row_id, renamed.get(row_id), kept, note))
                books.append(
                    {
                        "kind": r.kind,
                        "name": name,
                        "row_id": uuid.UUID(row_id),
                        "applied": applied,
                        "labels": {},
                        "annotations": {ROW_NAME: kept} if kept else {},
                        "secret_digest": r.secret_digest,
                        "updated_at": now,
                    }
                )
            apply_id = _record(conn, adoptions, user, now)
            book = reconciler_resources
            for b in books:  # bookkeeping left by a managed row that was deleted outside reconciler
                conn.execute(delete(book).where(book.c.kind == b["kind"], book.c.name == b["name"]))
            conn.execute(insert(book), [{**b, "apply_id": apply_id} for b in books])
    return AdoptResult(apply_id, tuple(adoptions), tuple(managed))


def _provider_tokens(conn: Connection, row_ids: list[str]) -> dict[str, bytes | None]:
    from sqlalchemy import select

    t = PROVIDER.table
    if not row_ids:
        return {}
    rows = conn.execute(select(t.c.id, t.c.api_key_encrypted).where(t.c.id.in_([uuid.UUID(r) for r in row_ids])))
    return {str(r.id): r.api_key_encrypted for r in rows}


def _record(conn: Connection, adoptions: list[Adoption], user: str, now: Any) -> int:
    details = {"adopted": [{"kind": a.kind, "name": a.name, "renamed_from": a.renamed_from, "row_name": a.row_name} for a in adoptions]}
    return record_operation(conn, command="adopt", user=user, details=details, started=now)
