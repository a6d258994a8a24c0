"""Key rotation: re-encrypt every stored API key under a new secret key, in one transaction.

The plan compares secrets by an HMAC keyed with the newest secret key, so rotation also recomputes
the HMACs the bookkeeping remembers (and the ciphertext digests): the next plan stays empty. Rows
whose ciphertext was changed outside reconciler keep their bookkeeping, so their drift still shows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select, update

from reconciler.errors import ReconcilerError
from reconciler.providers.secrets import (
    SECRET_KEY_ENV,
    SecretBox,
    generate_key,
    load_secret_box,
    undecryptable,
    write_key_file,
)
from reconciler.state.snapshot import ciphertext_digest
from reconciler.state.tables import llm_providers, reconciler_resources, utcnow


@dataclass(frozen=True)
class RotationResult:
    providers: tuple[str, ...]  # whose API key was re-encrypted
    source: str  # where the keys live
    generated: bool  # a new key was generated and written to the key file
    old_keys_kept: int  # previous keys still in the key file (0 after a clean rotation)


def _plain_keys(conn: Connection, box: SecretBox) -> dict[Any, tuple[str, bytes, str]]:
    """{provider id: (name, old ciphertext, plain key)}; every stored key must decrypt."""
    p = llm_providers.c
    rows = conn.execute(select(p.id, p.name, p.api_key_encrypted).where(p.api_key_encrypted.is_not(None)).order_by(p.name)).all()
    out: dict[Any, tuple[str, bytes, str]] = {}
    bad = []
    for r in rows:
        try:
            out[r.id] = (r.name, r.api_key_encrypted, box.decrypt(r.api_key_encrypted, r.name))
        except ReconcilerError:
            bad.append(r.name)
    if bad:
        raise undecryptable(bad, box.source)
    return out


def reencrypt_all(conn: Connection, box: SecretBox) -> tuple[str, ...]:
    """Re-encrypt every stored key under ``box``'s newest key and refresh the bookkeeping."""
    plain = _plain_keys(conn, box)
    if not plain:
        return ()
    p = llm_providers
    b = reconciler_resources
    books = {r.row_id: r for r in conn.execute(select(b.c.name, b.c.row_id, b.c.applied, b.c.secret_digest).where(b.c.kind == "Provider"))}
    now = utcnow()
    rows, book_rows = [], []
    for row_id, (_name, old_token, value) in plain.items():
        token = box.encrypt(value)
        rows.append({"_id": row_id, "api_key_encrypted": token, "updated_at": now})
        book = books.get(row_id)
        if book is None or book.secret_digest != ciphertext_digest(old_token) or not (book.applied or {}).get("api_key"):
            continue  # unmanaged, or changed outside reconciler: leave it for the plan to report
        applied = dict(book.applied)
        applied["api_key"] = {**applied["api_key"], "hmac": box.fingerprint(value)}
        book_rows.append({"_name": book.name, "applied": applied, "secret_digest": ciphertext_digest(token)})
    conn.execute(
        update(p).where(p.c.id == bindparam("_id")).values(api_key_encrypted=bindparam("api_key_encrypted"), updated_at=bindparam("updated_at")),
        rows,
    )
    if book_rows:
        conn.execute(
            update(b)
            .where(b.c.kind == "Provider", b.c.name == bindparam("_name"))
            .values(applied=bindparam("applied"), secret_digest=bindparam("secret_digest")),
            book_rows,
        )
    return tuple(sorted(name for name, _, _ in plain.values()))


def rotate_secrets(engine: Engine, *, keep_old: bool = False, lock_timeout: float | None = None) -> RotationResult:
    """Rotate to a new key. With a key file holding one key, a new key is generated and written
    first (so nothing is ever encrypted under a key that is not saved); with several keys, or
    with $RECONCILER_SECRET_KEY, the first key is the new one and the others are the old ones."""
    box = load_secret_box(create=False, needed_for="there is nothing to rotate from")
    original = box.keys
    generated = False
    if box.path is None and len(box.keys) < 2:
        raise ReconcilerError(
            f"${SECRET_KEY_ENV} holds a single key, so there is no new key to rotate to",
            hint=f"put a new key in front of the current one: {SECRET_KEY_ENV}=NEW,CURRENT "
            "(make one with `reconciler secrets generate-key`), run rotate, then keep only NEW",
        )
    key_file = box.path
    if key_file is not None and len(box.keys) < 2:
        box = SecretBox((generate_key().encode(), *box.keys), box.source, key_file)
        write_key_file(key_file, box.keys)
        generated = True
    try:
        with _locked_transaction(engine, "secrets rotate", lock_timeout) as conn:
            names = reencrypt_all(conn, box)
            if names:
                _record(conn, "secrets rotate", names, box.source)
    except BaseException:
        if generated and key_file is not None:
            write_key_file(key_file, original)  # nothing was committed under the new key
        raise
    kept = len(box.keys) - 1
    if key_file is not None and not keep_old:
        write_key_file(key_file, box.keys[:1])
        kept = 0
    return RotationResult(names, box.source, generated, kept)


def forget_undecryptable(engine: Engine, *, lock_timeout: float | None = None) -> tuple[str, ...]:
    """Clear stored API keys that no configured key can decrypt (their key is lost); the next
    apply encrypts them again from the manifests' references."""
    box = load_secret_box(create=False)
    p = llm_providers
    b = reconciler_resources
    with _locked_transaction(engine, "secrets forget", lock_timeout) as conn:
        rows = conn.execute(select(p.c.id, p.c.name, p.c.api_key_encrypted).where(p.c.api_key_encrypted.is_not(None))).all()
        lost = [r for r in rows if not box.can_decrypt(r.api_key_encrypted)]
        if lost:
            from reconciler.state.columns import writable

            ids = [r.id for r in lost]
            p = writable(conn, llm_providers)  # validation_status may be the database's own enum type
            conn.execute(
                update(p)
                .where(p.c.id.in_(ids))
                .values(api_key_encrypted=None, validation_status="pending", validation_error=None, validated_at=None, updated_at=utcnow())
            )
            conn.execute(update(b).where(b.c.kind == "Provider", b.c.row_id.in_(ids)).values(secret_digest=None))
            _record(conn, "secrets forget", sorted(r.name for r in lost), box.source)
    return tuple(sorted(r.name for r in lost))


def _record(conn: Connection, command: str, providers: Sequence[str], key_source: str) -> None:
    """Key changes belong in the audit trail beside applies (provider names and key source only)."""
    from reconciler.state.history import record_operation
    from reconciler.state.lock import holder_identity

    details = {"providers": list(providers), "key_source": key_source}
    record_operation(conn, command=command, user=holder_identity(), details=details, updated=len(providers))


@contextlib.contextmanager
def _locked_transaction(engine: Engine, command: str, lock_timeout: float | None) -> Iterator[Connection]:
    """One write transaction under the apply lock, as apply itself runs."""
    from reconciler.state.db import translate_db_errors
    from reconciler.state.lock import DEFAULT_LOCK_TIMEOUT, apply_lock

    with apply_lock(engine, DEFAULT_LOCK_TIMEOUT if lock_timeout is None else lock_timeout, command=command):
        with translate_db_errors(engine.url, f"running {command}"):
            with engine.connect() as conn:
                conn = conn.execution_options(sqlite_begin="IMMEDIATE")
                with conn.begin():
                    yield conn
