"""A database the seed service made, brought under GitOps as a new user would: get -> export ->
adopt --all -> plan (no changes) -> apply of a change, a new provider and a new agent; afterwards the
service's own models still read every row, by id and by the names they had, and decrypt the keys
with the Fernet key they share with reconciler. On SQLite and on a real PostgreSQL, where SQLModel
makes ``llm_providers.type`` and ``validation_status`` native enum types."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.fernet import Fernet
from sqlmodel import select

from tests.providers.servers import OLLAMA_TAGS, OPENAI_MODELS, Reply, serve
from tests.seed.helpers import OPENAI_KEY, SHARED_KEY, database_objects, enum_values, fill_like_the_service
from tests.seed.models import (
    AgentConfig,
    AgentTaskAssignment,
    LLMProvider,
    ProviderType,
    Session,
    TaskConfig,
    ValidationStatus,
    get_by_name,
    seed_engine,
)

NEW_KEY = "sk-rotated-fedcba9876543210"
ENV = {"RECONCILER_SECRET_KEY": SHARED_KEY, "OPENAI_GPT_4_API_KEY": OPENAI_KEY}


def edit_documents(path: Path, edit: Any) -> None:
    """Rewrite a multi-document manifest file, ``edit(doc)`` changing each document in place."""
    docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
    for d in docs:
        edit(d)
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True), encoding="utf-8")


def append_document(path: Path, doc: dict[str, Any]) -> None:
    path.write_text(path.read_text(encoding="utf-8") + "---\n" + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def test_a_seed_database_is_read_exported_adopted_and_applied_and_the_service_still_reads_it(
    cli_run, db_url: str, tmp_path: Path
) -> None:
    ids = fill_like_the_service(db_url)
    untouched = database_objects(db_url)

    # reading a database reconciler never wrote: every row unmanaged, nothing created
    code, out, err = cli_run("get", "agents", "--db", db_url, "-o", "json")
    assert code == 0, err
    (agent,) = json.loads(out)
    assert (agent["name"], agent["provider"], agent["managed"], agent["id"]) == ("Message Classifier", "Ollama Local", False, str(ids["Message Classifier"]))
    code, out, err = cli_run("get", "providers", "--db", db_url, "-o", "json")
    assert code == 0, err
    assert {(p["name"], p["type"], p["validation_status"], p["managed"]) for p in json.loads(out)} == {
        ("Ollama Local", "ollama", "connected", False), ("OpenAI GPT-4", "openai", "connected", False),
    }
    assert cli_run("get", "assignments", "--db", db_url)[0] == 0
    assert cli_run("history", "--db", db_url, "-o", "json")[:2] == (0, "[]\n")
    assert cli_run("drift", "--db", db_url, "--detailed-exitcode")[:2] == (0, "No drift. The database matches what reconciler last applied.\n")
    out_dir = tmp_path / "manifests"
    code, _, err = cli_run("export", "--db", db_url, "--out", str(out_dir), env=ENV)
    assert code == 0, err
    assert "named 'Message Classifier' in the database; reconciler/row-name keeps that name" in err
    code, out, _ = cli_run("plan", str(out_dir), "--db", db_url, env=ENV)
    assert code == 1  # not adopted yet: the rows are there, unmanaged
    assert database_objects(db_url) == untouched

    (exported_agent,) = yaml.safe_load_all((out_dir / "agents.yaml").read_text())
    assert exported_agent["metadata"] == {"name": "message-classifier", "annotations": {"reconciler/row-name": "Message Classifier"}}
    assert exported_agent["spec"]["provider"] == "ollama-local"
    assert OPENAI_KEY not in "".join(p.read_text() for p in out_dir.iterdir())

    code, out, err = cli_run("adopt", "--all", "--db", db_url, env=ENV)
    assert code == 0, err
    assert "  adopted agent message-classifier (keeps its row name 'Message Classifier')" in out
    assert "Adopted 5 resources (#1)." in out
    assert cli_run("plan", str(out_dir), "--db", db_url, "--detailed-exitcode", env=ENV) == (0, "No changes. The database matches the manifests.\n", "")

    # a change (the classifier's temperature; the OpenAI provider's key and endpoint), a new provider, a new agent
    with serve({"/api/tags": Reply(body=OLLAMA_TAGS), "/v1/models": Reply(body=OPENAI_MODELS)}) as gpu, serve(
        {"/v1/models": Reply(body=OPENAI_MODELS, bearer=NEW_KEY)}
    ) as openai:

        def edit_provider(d: dict[str, Any]) -> None:
            if d["metadata"]["name"] == "openai-gpt-4":
                d["spec"]["base_url"] = f"{openai.url}/v1"

        edit_documents(out_dir / "providers.yaml", edit_provider)
        append_document(out_dir / "providers.yaml", {
            "apiVersion": "reconciler/v1", "kind": "Provider", "metadata": {"name": "gpu-box"}, "spec": {"type": "ollama", "base_url": gpu.url},
        })
        edit_documents(out_dir / "agents.yaml", lambda d: d["spec"].update(temperature=0.2))
        append_document(out_dir / "agents.yaml", {
            "apiVersion": "reconciler/v1", "kind": "Agent", "metadata": {"name": "triage"},
            "spec": {"provider": "gpu-box", "model_name": "llama3.2:1b", "system_prompt": "Route the message.", "temperature": 0.1},
        })
        env = {**ENV, "OPENAI_GPT_4_API_KEY": NEW_KEY}
        code, out, err = cli_run("plan", str(out_dir), "--db", db_url, env=env)
        assert code == 0, err
        assert "  + provider gpu-box\n" in out and "  + agent triage\n" in out
        assert "  ~ agent message-classifier: temperature 0.7 → 0.2\n" in out
        assert "api_key (sensitive value changed)" in out and "Warning" not in out
        code, out, err = cli_run("apply", str(out_dir), "--db", db_url, "--auto-approve", "--wait-validation", env=env)
        assert code == 0, err + out
        assert "Apply complete (#2): 2 created, 2 updated, 0 deleted." in out
        assert "  gpu-box: connected" in out and "  openai-gpt-4: connected" in out
        assert any(path == "/v1/models" for path, _ in openai.requests)  # probed with the new key (the stub checks it)
    assert cli_run("plan", str(out_dir), "--db", db_url, "--detailed-exitcode", env=env)[0] == 0
    assert cli_run("drift", "--db", db_url, "--detailed-exitcode")[0] == 0

    # the service's own models read every row, by id and by the names they had
    engine = seed_engine(db_url)
    try:
        with Session(engine) as s:
            for name, model in (("Ollama Local", LLMProvider), ("OpenAI GPT-4", LLMProvider), ("Message Classifier", AgentConfig), ("Classify Message", TaskConfig)):
                by_id = s.get(model, ids[name])
                assert by_id is not None and by_id.name == name
                assert get_by_name(s, model, name).id == ids[name]
            assert s.get(AgentTaskAssignment, ids["assignment"]) is not None
            classifier = get_by_name(s, AgentConfig, "Message Classifier")
            assert (classifier.temperature, classifier.provider_id, classifier.max_tokens) == (0.2, ids["Ollama Local"], 500)
            openai_row = get_by_name(s, LLMProvider, "OpenAI GPT-4")
            assert Fernet(SHARED_KEY.encode()).decrypt(openai_row.api_key_encrypted).decode() == NEW_KEY
            assert openai_row.validation_status is ValidationStatus.connected
            gpu_row = get_by_name(s, LLMProvider, "gpu-box")
            assert (gpu_row.type, gpu_row.validation_status, gpu_row.is_active) == (ProviderType.ollama, ValidationStatus.connected, True)
            assert get_by_name(s, AgentConfig, "triage").provider_id == gpu_row.id
            assert sorted(p.name for p in s.exec(select(LLMProvider))) == ["Ollama Local", "OpenAI GPT-4", "gpu-box"]
            assert sorted(a.name for a in s.exec(select(AgentConfig))) == ["Message Classifier", "triage"]
            assert [t.response_schema["required"] for t in s.exec(select(TaskConfig))] == [["category", "confidence"]]
            assert len(s.exec(select(AgentTaskAssignment)).all()) == 1
    finally:
        engine.dispose()
    if db_url.startswith("postgresql"):
        assert enum_values(db_url, "providertype") == ["ollama", "openai"]  # nothing was added to the service's enums


@pytest.mark.postgres
def test_a_provider_type_the_enum_lacks_is_shown_refused_and_added_only_when_asked(cli_run, pg_url: str, tmp_path: Path) -> None:
    from tests.reliability.dbstate import dump_state, history_rows

    ids = fill_like_the_service(pg_url)
    out_dir = tmp_path / "manifests"
    assert cli_run("export", "--db", pg_url, "--out", str(out_dir), env=ENV)[0] == 0
    assert cli_run("adopt", "--all", "--db", pg_url, env=ENV)[0] == 0
    append_document(out_dir / "providers.yaml", {"apiVersion": "reconciler/v1", "kind": "Provider", "metadata": {"name": "local"}, "spec": {"type": "llamacpp"}})
    before, history = dump_state(pg_url), history_rows(pg_url)
    warning = (
        "Warning: llm_providers.type is the PostgreSQL enum providertype ('ollama', 'openai'); provider local would write "
        "'llamacpp', which it lacks. The service that owns this database cannot read a row with a value its enum lacks.\n"
        "  `reconciler apply` refuses this plan unless --extend-enums (ALTER TYPE providertype ADD VALUE 'llamacpp').\n"
    )
    code, out, err = cli_run("plan", str(out_dir), "--db", pg_url, env=ENV)
    assert (code, err) == (0, "")
    assert out.endswith(warning)
    code, out, _ = cli_run("plan", str(out_dir), "--db", pg_url, "--json", "--out", str(tmp_path / "plan.json"), env=ENV)
    assert json.loads(out)["enum_values_missing"] == [{
        "table": "llm_providers", "column": "type", "enum": "providertype", "values": ["ollama", "openai"], "missing": ["llamacpp"],
        "resources": ["provider local"],
    }]

    # refused, for the manifests and for the saved plan, before anything is written
    for args in ((str(out_dir), "--auto-approve"), (str(tmp_path / "plan.json"),)):
        code, out, err = cli_run("apply", *args, "--db", pg_url, "--no-validate", env=ENV)
        assert code == 1 and "Traceback" not in err
        assert "error: llm_providers.type is the PostgreSQL enum providertype ('ollama', 'openai'); provider local would write 'llamacpp'" in err
        assert "hint: add the values with `reconciler apply --extend-enums`" in err and "nothing was changed" in err
        assert (dump_state(pg_url), history_rows(pg_url), enum_values(pg_url, "providertype")) == (before, history, ["ollama", "openai"])

    code, out, err = cli_run("apply", str(out_dir), "--db", pg_url, "--auto-approve", "--extend-enums", env=ENV)
    assert code == 0, err
    assert "Extended the enum providertype (llm_providers.type) with 'llamacpp'.\nApply complete (#3): 1 created, 0 updated, 0 deleted.\n" in out
    assert enum_values(pg_url, "providertype") == ["ollama", "openai", "llamacpp"]
    code, out, _ = cli_run("history", "--db", pg_url, "-o", "json")
    applied, extended, _adopted = json.loads(out)
    assert (applied["command"], extended["command"], extended["plan"]["extended_enums"][0]["missing"]) == ("apply", "extend-enums", ["llamacpp"])
    assert applied["plan"]["enum_values_missing"][0]["missing"] == ["llamacpp"]
    assert cli_run("plan", str(out_dir), "--db", pg_url, "--detailed-exitcode", env=ENV)[:2] == (0, "No changes. The database matches the manifests.\n")
    code, out, _ = cli_run("get", "providers", "local", "--db", pg_url, "-o", "json")
    assert json.loads(out)[0]["validation_status"] in ("connected", "error")  # validated, the status written through its enum

    # what the warning said: the service's models cannot read that row, and still read every other one by id
    engine = seed_engine(pg_url)
    try:
        with Session(engine) as s, pytest.raises(LookupError, match="llamacpp"):
            get_by_name(s, LLMProvider, "local")
        with Session(engine) as s:
            assert s.get(LLMProvider, ids["Ollama Local"]).type is ProviderType.ollama
            assert get_by_name(s, AgentConfig, "Message Classifier").id == ids["Message Classifier"]
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_the_validation_status_enum_is_checked_too(cli_run, pg_url: str, tmp_path: Path) -> None:
    """A service whose status enum lacks one reconciler writes ('validating'): plan says so for every provider that will be validated."""
    from sqlalchemy import text

    fill_like_the_service(pg_url)
    engine = seed_engine(pg_url)
    with engine.begin() as conn:  # an older service release: pending, connected, error
        conn.execute(text("ALTER TABLE llm_providers ALTER COLUMN validation_status TYPE text"))
        conn.execute(text("DROP TYPE validationstatus"))
        conn.execute(text("CREATE TYPE validationstatus AS ENUM ('pending', 'connected', 'error')"))
        conn.execute(text("ALTER TABLE llm_providers ALTER COLUMN validation_status TYPE validationstatus USING validation_status::validationstatus"))
    engine.dispose()
    out_dir = tmp_path / "manifests"
    assert cli_run("export", "--db", pg_url, "--out", str(out_dir), env=ENV)[0] == 0
    assert cli_run("adopt", "--all", "--db", pg_url, env=ENV)[0] == 0
    assert cli_run("plan", str(out_dir), "--db", pg_url, "--detailed-exitcode", env=ENV)[0] == 0  # no change writes a status
    append_document(out_dir / "providers.yaml", {
        "apiVersion": "reconciler/v1", "kind": "Provider", "metadata": {"name": "gpu-box"}, "spec": {"type": "ollama", "base_url": "http://127.0.0.1:9"},
    })
    code, out, _ = cli_run("plan", str(out_dir), "--db", pg_url, env=ENV)
    assert code == 0
    assert (
        "Warning: llm_providers.validation_status is the PostgreSQL enum validationstatus ('pending', 'connected', 'error'); "
        "provider gpu-box would write 'validating', which it lacks."
    ) in out


@pytest.mark.postgres
def test_a_stale_saved_plan_extends_nothing(cli_run, pg_url: str, tmp_path: Path) -> None:
    from sqlalchemy import text

    fill_like_the_service(pg_url)
    out_dir = tmp_path / "manifests"
    assert cli_run("export", "--db", pg_url, "--out", str(out_dir), env=ENV)[0] == 0
    assert cli_run("adopt", "--all", "--db", pg_url, env=ENV)[0] == 0
    append_document(out_dir / "providers.yaml", {"apiVersion": "reconciler/v1", "kind": "Provider", "metadata": {"name": "local"}, "spec": {"type": "llamacpp"}})
    assert cli_run("plan", str(out_dir), "--db", pg_url, "--out", str(tmp_path / "plan.json"), env=ENV)[0] == 0
    engine = seed_engine(pg_url)
    with engine.begin() as conn:  # the service changes a row after the plan was made
        conn.execute(text("UPDATE agent_configs SET temperature = 0.9"))
    engine.dispose()
    code, _, err = cli_run("apply", str(tmp_path / "plan.json"), "--db", pg_url, "--extend-enums", "--no-validate", env=ENV)
    assert code == 1 and "the database changed after this plan was made" in err
    assert enum_values(pg_url, "providertype") == ["ollama", "openai"]


@pytest.mark.postgres
def test_secrets_forget_writes_the_status_through_the_enum(cli_run, pg_url: str) -> None:
    """``secrets forget`` resets validation_status, a column the seed types as its own enum."""
    fill_like_the_service(pg_url)
    other_key = Fernet.generate_key().decode()  # not the service's key: its API key cannot be decrypted
    assert cli_run("adopt", "--all", "--db", pg_url, env={"RECONCILER_SECRET_KEY": other_key})[0] == 0
    code, out, err = cli_run("secrets", "forget", "--undecryptable", "--db", pg_url, env={"RECONCILER_SECRET_KEY": other_key})
    assert code == 0, err
    assert "OpenAI GPT-4" in out
    engine = seed_engine(pg_url)
    try:
        with Session(engine) as s:
            row = get_by_name(s, LLMProvider, "OpenAI GPT-4")
            assert (row.api_key_encrypted, row.validation_status) == (None, ValidationStatus.pending)
    finally:
        engine.dispose()
