"""Shared bits for the provider tests: manifests, database dumps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, create_engine, select

from reconciler.state.db import database_url


def provider_doc(name: str, type_: str, base_url: str | None = None, api_key: str | None = None, extra: str = "") -> str:
    """A Provider manifest; ``api_key`` is the YAML for the reference, e.g. '{from_env: X_API_KEY}'."""
    lines = ["apiVersion: reconciler/v1", "kind: Provider", f"metadata: {{name: {name}}}", "spec:", f"  type: {type_}"]
    if base_url is not None:
        lines.append(f"  base_url: {base_url}")
    if api_key is not None:
        lines.append(f"  api_key: {api_key}")
    if extra:
        lines.append(extra)
    return "\n".join(lines) + "\n"


def docs(*documents: str) -> str:
    return "---\n".join(documents)


def dump_db(url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted: two dumps are equal iff nothing was changed."""
    engine = create_engine(database_url(url))
    try:
        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            return {name: sorted((tuple(r) for r in conn.execute(select(table))), key=repr) for name, table in meta.tables.items()}
    finally:
        engine.dispose()


def key_file_for(db_url: str) -> Path:
    """Where the secret key of ``db_url`` is kept by default: beside a SQLite file, else .reconciler/ here."""
    if db_url.startswith("sqlite:///"):
        return Path(db_url.removeprefix("sqlite:///")).parent / "secret.key"
    return Path(".reconciler/secret.key")
