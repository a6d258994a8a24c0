"""A recognisable API key must never show up anywhere but in the request to its own provider.

Apply a provider whose key comes from the environment, exercise every command that prints or
stores something, then search the database (file bytes for SQLite, every table's text for
PostgreSQL), every plan format, the saved plan, history, `get`, `providers`, logs and stderr.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, create_engine, inspect, select, text

from reconciler.state.db import database_url, sqlite_path
from tests.providers.helpers import docs, provider_doc
from tests.providers.servers import OPENAI_MODELS, Reply, serve


def _database_texts(url: str) -> list[bytes]:
    """What an attacker with the database would see: the SQLite files, or every PostgreSQL row as text."""
    parsed = database_url(url)
    path = sqlite_path(parsed)
    if path is not None:
        return [p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name)]
    engine = create_engine(parsed)
    try:
        meta = MetaData()
        meta.reflect(engine)
        with engine.connect() as conn:
            return [
                "\n".join(str(v) for v in conn.execute(text(f'SELECT t::text FROM "{name}" t')).scalars()).encode()
                for name in meta.tables
            ]
    finally:
        engine.dispose()


def _ciphertexts(url: str) -> list[bytes]:
    parsed = database_url(url)
    path = sqlite_path(parsed)
    if path is not None and not path.exists():
        return []
    engine = create_engine(parsed)
    try:
        if not inspect(engine).has_table("llm_providers"):
            return []
        meta = MetaData()
        meta.reflect(engine, only=["llm_providers"])
        table = meta.tables["llm_providers"]
        with engine.connect() as conn:
            return [bytes(v) for v in conn.execute(select(table.c.api_key_encrypted)).scalars() if v is not None]
    finally:
        engine.dispose()


def test_the_key_never_leaks(cli_run: Any, db_url: str, write_manifests: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    first = f"sk-LEAK-{uuid.uuid4().hex}"
    second = f"sk-LEAK-{uuid.uuid4().hex}"
    outputs: list[str] = []
    ciphertexts: set[bytes] = set()

    with serve({"/v1/models": Reply(body=OPENAI_MODELS, bearer=second), "/echo/v1/models": Reply(echo_headers=True)}) as srv:
        manifests = str(
            write_manifests(
                {
                    "providers.yaml": docs(
                        provider_doc("openai-prod", "openai", srv.url + "/v1", "{from_env: LEAK_API_KEY}"),
                        provider_doc("echo", "openai", srv.url + "/echo/v1", "{from_env: LEAK_API_KEY}"),
                        provider_doc("from-file", "openai", srv.url + "/v1", "{from_file: secrets/openai.key}"),
                    )
                }
            )
        )
        secret_file = Path(manifests) / "secrets" / "openai.key"
        secret_file.parent.mkdir()
        saved = tmp_path / "saved.plan"

        def run(*args: str, key: str, code: int | None = 0) -> None:
            secret_file.write_text(key + "\n")
            result = cli_run(*args, env={"LEAK_API_KEY": key})
            assert code is None or result[0] == code, result
            outputs.extend(result[1:])
            ciphertexts.update(_ciphertexts(db_url))

        run("validate", manifests, key=first)
        run("plan", manifests, "--db", db_url, key=first)
        run("plan", manifests, "--db", db_url, "--json", key=first)
        run("plan", manifests, "--db", db_url, "--format", "markdown", key=first)
        run("plan", manifests, "--db", db_url, "--out", str(saved), key=first)
        run("apply", str(saved), "--db", db_url, key=first)  # validates: 401 and an echoed body
        run("providers", "check", "--db", db_url, "--json", key=first, code=1)
        run("providers", "check", "--db", db_url, key=first, code=1)
        run("providers", "models", "echo", "--db", db_url, key=first, code=1)
        run("plan", manifests, "--db", db_url, "--detailed-exitcode", key=second, code=2)  # the key changed
        run("plan", manifests, "--db", db_url, "--json", key=second)
        run("apply", manifests, "--db", db_url, "--auto-approve", key=second)
        run("providers", "models", "openai-prod", "--db", db_url, key=second)
        run("secrets", "rotate", "--db", db_url, key=second)
        run("apply", manifests, "--db", db_url, "--auto-approve", "--wait-validation", key=second)  # no changes
        run("providers", "check", "openai-prod", "from-file", "--db", db_url, "--json", key=second)
        for fmt in ("table", "json", "yaml"):
            run("history", "--db", db_url, "-o", fmt, key=second)
            run("get", "providers", "--db", db_url, "-o", fmt, key=second)
        auth = [headers.get("Authorization") for _, headers in srv.requests]

    assert f"Bearer {first}" in auth and f"Bearer {second}" in auth  # the keys did reach their provider
    assert any("sensitive value changed" in o for o in outputs)
    assert len(ciphertexts) >= 4  # encrypted, re-encrypted for the new value, rotated
    haystacks = {
        "output": "\n".join(outputs).encode(),
        "logs": caplog.text.encode(),
        "saved plan": saved.read_bytes(),
        **{f"database #{i}": blob for i, blob in enumerate(_database_texts(db_url))},
    }
    needles = {"first key": first, "second key": second}
    needles.update({f"ciphertext {i}": c.decode() for i, c in enumerate(sorted(ciphertexts))})
    for where, blob in haystacks.items():
        for what, needle in needles.items():
            if where.startswith("database") and what.startswith("ciphertext"):
                continue  # the database holds the current ciphertext: that is the point
            assert needle.encode() not in blob, f"{what} found in {where}"
            assert needle.encode().hex().encode() not in blob.lower(), f"{what} found hex-encoded in {where}"
