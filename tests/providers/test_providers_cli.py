"""apply validates providers; `providers check/models`; `secrets rotate/forget` (real servers, real databases)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from reconciler.providers.events import provider_events
from reconciler.providers.status import check_providers
from reconciler.state.db import open_engine
from tests.providers.helpers import docs, dump_db, key_file_for, provider_doc
from tests.providers.servers import OLLAMA_TAGS, OPENAI_MODELS, FakeServer, Reply, closed_port, serve

KEY = "sk-cli-7d41b0e2a9c3"
ENV = {"TEST_OPENAI_API_KEY": KEY}


@pytest.fixture
def openai_srv() -> Iterator[FakeServer]:
    with serve({"/v1/models": Reply(body=OPENAI_MODELS, bearer=KEY)}) as srv:
        yield srv


@pytest.fixture
def ollama_srv() -> Iterator[FakeServer]:
    with serve({"/api/tags": Reply(body=OLLAMA_TAGS)}) as srv:
        yield srv


def _manifests(write_manifests: Any, ollama_url: str, openai_url: str, *more: str) -> str:
    text = docs(
        provider_doc("ollama-local", "ollama", ollama_url),
        provider_doc("openai-prod", "openai", openai_url + "/v1", "{from_env: TEST_OPENAI_API_KEY}"),
        *more,
    )
    return str(write_manifests({"providers.yaml": text}))


def _providers(cli_run: Any, db: str) -> dict[str, dict[str, Any]]:
    code, out, err = cli_run("get", "providers", "--db", db, "-o", "json")
    assert code == 0, err
    return {r["name"]: r for r in json.loads(out)}


def _status(cli_run: Any, db: str) -> dict[str, tuple[str, str | None]]:
    return {n: (r["validation_status"], r["validation_error"]) for n, r in _providers(cli_run, db).items()}


def test_apply_validates_created_providers(cli_run, db_url, write_manifests, ollama_srv, openai_srv) -> None:
    m = _manifests(write_manifests, ollama_srv.url, openai_srv.url)
    code, out, err = cli_run("apply", m, "--db", db_url, "--auto-approve", env=ENV)
    assert code == 0, err
    assert out.endswith(
        "Apply complete (#1): 2 created, 0 updated, 0 deleted.\n"
        "Validated 2 providers:\n  ollama-local: connected (2 models)\n  openai-prod: connected (2 models)\n"
    )
    rows = _providers(cli_run, db_url)
    assert {n: (r["validation_status"], r["validation_error"], r["validated_at"] is not None) for n, r in rows.items()} == {
        "ollama-local": ("connected", None, True),
        "openai-prod": ("connected", None, True),
    }
    assert openai_srv.requests[-1][1]["Authorization"] == f"Bearer {KEY}"  # the decrypted key was sent
    seen = len(openai_srv.requests)
    code, out, _ = cli_run("apply", m, "--db", db_url, "--auto-approve", env=ENV)
    assert (code, out) == (0, "No changes. The database matches the manifests.\n")
    assert len(openai_srv.requests) == seen  # nothing changed, nothing validated


def test_changed_provider_is_validated_again(cli_run, sqlite_url, write_manifests, ollama_srv, openai_srv) -> None:
    cli_run("apply", _manifests(write_manifests, ollama_srv.url, openai_srv.url), "--db", sqlite_url, "--auto-approve", env=ENV)
    port = closed_port()
    m = _manifests(write_manifests, f"http://127.0.0.1:{port}", openai_srv.url)
    code, out, err = cli_run("apply", m, "--db", sqlite_url, "--auto-approve", env=ENV)
    refused = f"connection refused: nothing is listening at 127.0.0.1:{port}; is the server running and base_url right?"
    assert code == 0, err
    assert out.endswith(f"Validated 1 provider:\n  ollama-local: error: {refused}\n")
    assert _status(cli_run, sqlite_url) == {"ollama-local": ("error", refused), "openai-prod": ("connected", None)}


def test_wait_validation_fails_the_apply_but_keeps_it(cli_run, db_url, write_manifests, ollama_srv) -> None:
    port = closed_port()
    m = _manifests(write_manifests, ollama_srv.url, f"http://127.0.0.1:{port}")
    code, out, err = cli_run("apply", m, "--db", db_url, "--auto-approve", "--wait-validation", env=ENV)
    assert code == 1
    assert "Apply complete (#1): 2 created" in out
    assert err == (
        "error: the apply succeeded, but 1 provider failed validation: openai-prod\n"
        "  hint: fix the provider and apply again, or re-check with `reconciler providers check`\n"
    )
    assert _status(cli_run, db_url)["openai-prod"][0] == "error"
    code, _, err = cli_run("apply", m, "--db", db_url, "--auto-approve", "--wait-validation", "--no-validate", env=ENV)
    assert code == 2 and "exclude each other" in err


def test_no_validate_leaves_providers_pending(cli_run, sqlite_url, write_manifests, ollama_srv, openai_srv) -> None:
    m = _manifests(write_manifests, ollama_srv.url, openai_srv.url)
    code, out, _ = cli_run("apply", m, "--db", sqlite_url, "--auto-approve", "--no-validate", env=ENV)
    assert code == 0 and "Validated" not in out
    assert _status(cli_run, sqlite_url) == {"ollama-local": ("pending", None), "openai-prod": ("pending", None)}
    assert ollama_srv.requests == [] and openai_srv.requests == []


def test_check_json_streams_status_changes(cli_run, sqlite_url, write_manifests, ollama_srv) -> None:
    port = closed_port()
    m = _manifests(write_manifests, ollama_srv.url, f"http://127.0.0.1:{port}")
    cli_run("apply", m, "--db", sqlite_url, "--auto-approve", "--no-validate", env=ENV)
    code, out, err = cli_run("providers", "check", "--db", sqlite_url, "--json", "--timeout", "3")
    assert code == 1
    assert err.startswith("error: 1 of 2 providers failed validation: openai-prod\n")
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["provider"], e["validation_status"]) for e in events[:2]] == [("ollama-local", "validating"), ("openai-prod", "validating")]
    final = {e["provider"]: e for e in events[2:]}
    assert {n: (e["event"], e["validation_status"], e["models"]) for n, e in final.items()} == {
        "ollama-local": ("validation_update", "connected", ["llama3.2:1b", "qwen2.5:0.5b"]),
        "openai-prod": ("validation_update", "error", []),
    }
    assert final["openai-prod"]["validation_error"].startswith("connection refused")
    assert all(e["validated_at"] for e in final.values())


def test_check_table_names_and_inactive(cli_run, sqlite_url, write_manifests, ollama_srv, openai_srv) -> None:
    inactive = provider_doc("spare", "ollama", f"http://127.0.0.1:{closed_port()}", extra="  is_active: false")
    m = _manifests(write_manifests, ollama_srv.url, openai_srv.url, inactive)
    cli_run("apply", m, "--db", sqlite_url, "--auto-approve", env=ENV)
    assert _status(cli_run, sqlite_url)["spare"] == ("pending", None)  # inactive: not validated after apply
    code, out, err = cli_run("providers", "check", "--db", sqlite_url)
    assert code == 0, err
    assert [line.split()[:3] for line in out.splitlines()] == [
        ["NAME", "STATUS", "MODELS"], ["ollama-local", "connected", "2"], ["openai-prod", "connected", "2"],
    ]
    code, out, err = cli_run("providers", "check", "spare", "--db", sqlite_url)
    assert code == 1 and "spare" in out and "1 of 1 provider failed validation: spare" in err
    code, _, err = cli_run("providers", "check", "nope", "--db", sqlite_url)
    assert (code, err) == (1, "error: no provider named 'nope' in the database\n  hint: list them with `reconciler get providers`\n")


def test_models_command(cli_run, sqlite_url, write_manifests, ollama_srv, openai_srv) -> None:
    cli_run("apply", _manifests(write_manifests, ollama_srv.url, openai_srv.url), "--db", sqlite_url, "--auto-approve", env=ENV)
    assert cli_run("providers", "models", "ollama-local", "--db", sqlite_url) == (0, "llama3.2:1b\nqwen2.5:0.5b\n", "")
    code, out, _ = cli_run("providers", "models", "openai-prod", "--db", sqlite_url, "-o", "json")
    assert (code, json.loads(out)) == (0, {"provider": "openai-prod", "url": f"{openai_srv.url}/v1/models", "models": ["gpt-4o-mini", "gpt-4o"]})
    code, _, err = cli_run("providers", "models", "nope", "--db", sqlite_url)
    assert code == 1 and "no provider named 'nope'" in err


def test_events_reach_subscribers_and_stale_results_are_dropped(cli_run, sqlite_url, write_manifests, ollama_srv, openai_srv) -> None:
    cli_run("apply", _manifests(write_manifests, ollama_srv.url, openai_srv.url), "--db", sqlite_url, "--auto-approve", "--no-validate", env=ENV)
    engine = open_engine(sqlite_url, create=False)
    assert engine is not None
    events: list[dict[str, Any]] = []

    def on_event(event: dict[str, Any]) -> None:
        events.append(event)
        if event["validation_status"] == "validating" and event["provider"] == "ollama-local":
            # an apply changes the provider while it is being probed: it resets the status to pending
            with engine.begin() as conn:
                conn.exec_driver_sql("UPDATE llm_providers SET base_url = 'http://elsewhere:1', validation_status = 'pending' WHERE name = 'ollama-local'")

    unsubscribe = provider_events.subscribe(on_event)
    try:
        results = check_providers(engine, timeout=3)
    finally:
        unsubscribe()
    assert [(r.name, r.status) for r in results] == [("ollama-local", "connected"), ("openai-prod", "connected")]
    final = {e["provider"]: e for e in events if e["validation_status"] != "validating"}
    assert (final["ollama-local"].get("stale"), final["openai-prod"].get("stale")) == (True, None)
    assert _status(cli_run, sqlite_url) == {"ollama-local": ("pending", None), "openai-prod": ("connected", None)}


def test_rotate_with_the_key_file(cli_run, db_url, write_manifests, ollama_srv, openai_srv) -> None:
    key_file = key_file_for(db_url)
    m = _manifests(write_manifests, ollama_srv.url, openai_srv.url)
    cli_run("apply", m, "--db", db_url, "--auto-approve", env=ENV)
    old_key = key_file.read_text()
    before = dump_db(db_url)
    code, out, err = cli_run("secrets", "rotate", "--db", db_url)
    assert (code, out) == (0, f"Re-encrypted 1 API key under the new key (openai-prod).\nGenerated the new key in {key_file}.\n"), err
    new_key = key_file.read_text()
    assert new_key != old_key and len(new_key.split()) == 1 and key_file.stat().st_mode & 0o777 == 0o600
    assert dump_db(db_url)["llm_providers"] != before["llm_providers"]  # the ciphertext changed
    assert cli_run("plan", m, "--db", db_url, "--detailed-exitcode", env=ENV)[:2] == (0, "No changes. The database matches the manifests.\n")
    code, out, err = cli_run("providers", "check", "openai-prod", "--db", db_url)
    assert code == 0 and "connected" in out, err  # the key still decrypts to the same value
    assert openai_srv.requests[-1][1]["Authorization"] == f"Bearer {KEY}"
    key_file.write_text(old_key)
    code, _, err = cli_run("plan", m, "--db", db_url, env=ENV)
    assert code == 1 and "cannot decrypt the stored API key of provider 'openai-prod'" in err
    code, out, _ = cli_run("history", "--db", db_url, "-o", "json")
    rotation, apply = json.loads(out)[:2]
    assert (rotation["command"], rotation["updated"], apply["command"]) == ("secrets rotate", 1, "apply")
    assert rotation["plan"] == {"providers": ["openai-prod"], "key_source": str(key_file)}


def test_rotate_keep_old(cli_run, sqlite_url, write_manifests, ollama_srv, openai_srv) -> None:
    key_file = key_file_for(sqlite_url)
    cli_run("apply", _manifests(write_manifests, ollama_srv.url, openai_srv.url), "--db", sqlite_url, "--auto-approve", env=ENV)
    old_key = key_file.read_text().strip()
    code, out, _ = cli_run("secrets", "rotate", "--db", sqlite_url, "--keep-old")
    assert code == 0 and f"Kept 1 previous key(s) in {key_file}" in out
    keys = key_file.read_text().split()
    assert len(keys) == 2 and keys[1] == old_key


def test_rotate_with_the_environment(cli_run, db_url, write_manifests, ollama_srv, openai_srv) -> None:
    a, b = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    m = _manifests(write_manifests, ollama_srv.url, openai_srv.url)
    cli_run("apply", m, "--db", db_url, "--auto-approve", env={**ENV, "RECONCILER_SECRET_KEY": a})
    code, _, err = cli_run("secrets", "rotate", "--db", db_url, env={"RECONCILER_SECRET_KEY": a})
    assert code == 1 and err.startswith("error: $RECONCILER_SECRET_KEY holds a single key, so there is no new key to rotate to")
    code, out, err = cli_run("secrets", "rotate", "--db", db_url, env={"RECONCILER_SECRET_KEY": f"{b},{a}"})
    assert code == 0, err
    assert out.endswith("Now set RECONCILER_SECRET_KEY to the new key alone (the first one); the old key is no longer needed.\n")
    assert cli_run("plan", m, "--db", db_url, "--detailed-exitcode", env={**ENV, "RECONCILER_SECRET_KEY": b})[0] == 0
    assert cli_run("providers", "check", "--db", db_url, env={"RECONCILER_SECRET_KEY": b})[0] == 0
    assert not key_file_for(db_url).exists()
    code, _, err = cli_run("providers", "check", "--db", db_url, env={"RECONCILER_SECRET_KEY": a})
    assert code == 1 and "cannot decrypt the stored API key of provider 'openai-prod' with the secret key from $RECONCILER_SECRET_KEY" in err


def test_forget_undecryptable_then_apply_again(cli_run, sqlite_url, write_manifests, ollama_srv, openai_srv) -> None:
    m = _manifests(write_manifests, ollama_srv.url, openai_srv.url)
    cli_run("apply", m, "--db", sqlite_url, "--auto-approve", env=ENV)
    key_file_for(sqlite_url).write_text(Fernet.generate_key().decode() + "\n")  # the old key is lost
    assert cli_run("plan", m, "--db", sqlite_url, env=ENV)[0] == 1
    code, out, _ = cli_run("secrets", "forget", "--undecryptable", "--db", sqlite_url)
    assert (code, out) == (0, "Cleared the API keys of openai-prod. Run `reconciler apply` to encrypt them again from the manifests.\n")
    forgotten = json.loads(cli_run("history", "--db", sqlite_url, "-o", "json")[1])[0]
    assert (forgotten["command"], forgotten["plan"]["providers"]) == ("secrets forget", ["openai-prod"])
    code, out, _ = cli_run("plan", m, "--db", sqlite_url, env=ENV)
    assert code == 0 and "~ provider openai-prod: api_key (sensitive value changed)" in out
    assert cli_run("apply", m, "--db", sqlite_url, "--auto-approve", "--wait-validation", env=ENV)[0] == 0
    assert cli_run("plan", m, "--db", sqlite_url, "--detailed-exitcode", env=ENV)[0] == 0
    assert cli_run("secrets", "forget", "--undecryptable", "--db", sqlite_url)[1].startswith("Every stored API key decrypts")


def test_generate_key_prints_a_fernet_key(cli_run) -> None:
    code, out, _ = cli_run("secrets", "generate-key")
    assert code == 0 and Fernet(out.strip().encode())


def test_apply_imports_httpx_only_to_probe_a_server(tmp_path: Path, write_manifests: Any, ollama_srv: FakeServer) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    probe = (
        "import sys\nfrom reconciler.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print(sorted(m for m in ('httpx', 'cryptography', 'pydantic_ai') if m in sys.modules))"
    )

    def modules(manifests: Path) -> str:
        args = [sys.executable, "-c", probe, "apply", str(manifests), "--db", f"sqlite:///{tmp_path / 'lazy.db'}", "--auto-approve"]
        done = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()[-1]

    assert modules(write_manifests({"p.yaml": provider_doc("local", "llamacpp")}, "a")) == "[]"
    assert modules(write_manifests({"p.yaml": provider_doc("local", "llamacpp")}, "a")) == "[]"  # no changes
    both = docs(provider_doc("local", "llamacpp"), provider_doc("ollama-local", "ollama", ollama_srv.url))
    assert modules(write_manifests({"p.yaml": both}, "b")) == "['httpx']"


def test_a_key_replaced_outside_reconciler_is_drift_not_an_error(cli_run, db_url, write_manifests, ollama_srv, openai_srv) -> None:
    from sqlalchemy import create_engine, text

    from reconciler.state.db import database_url

    m = _manifests(write_manifests, ollama_srv.url, openai_srv.url)
    cli_run("apply", m, "--db", db_url, "--auto-approve", "--no-validate", env=ENV)
    foreign = Fernet(Fernet.generate_key()).encrypt(b"sk-someone-else")  # e.g. the seed service, with its own key
    engine = create_engine(database_url(db_url))
    with engine.begin() as conn:
        conn.execute(text("UPDATE llm_providers SET api_key_encrypted = :t WHERE name = 'openai-prod'"), {"t": foreign})
    engine.dispose()
    code, out, err = cli_run("plan", m, "--db", db_url, env=ENV)
    assert (code, out) == (
        0,
        "  ~ provider openai-prod: api_key (sensitive value changed) (drift: changed outside reconciler since apply #1)\n\n"
        "Plan: 0 to create, 1 to update, 0 to delete.\n",
    ), err
    assert cli_run("apply", m, "--db", db_url, "--auto-approve", "--wait-validation", env=ENV)[0] == 0
    assert cli_run("plan", m, "--db", db_url, "--detailed-exitcode", env=ENV)[0] == 0
