"""Row names the service looks rows up by ("Message Classifier"): export records them in the
annotation reconciler/row-name, adopt and apply keep them while the manifests use the slug, and
renaming is an explicit choice (adopt --rename, or removing the annotation)."""

from __future__ import annotations

from pathlib import Path

import yaml
from sqlalchemy import text
from sqlmodel import select

from tests.seed.helpers import SHARED_KEY, fill_like_the_service
from tests.seed.models import AgentConfig, LLMProvider, Session, get_by_name, seed_engine

ENV = {"RECONCILER_SECRET_KEY": SHARED_KEY, "OPENAI_GPT_4_API_KEY": "sk-seed-openai-0123456789abcdef"}
NO_CHANGES = "No changes. The database matches the manifests.\n"


def _row_names(url: str, model: type) -> list[str]:
    engine = seed_engine(url)
    try:
        with Session(engine) as s:
            return sorted(r.name for r in s.exec(select(model)))
    finally:
        engine.dispose()


def _export_and_adopt(cli_run, url: str, out_dir: Path, *adopt_args: str) -> None:
    fill_like_the_service(url)
    assert cli_run("export", "--db", url, "--out", str(out_dir), env=ENV)[0] == 0
    code, _, err = cli_run("adopt", "--all", *adopt_args, "--db", url, env=ENV)
    assert code == 0, err


def test_adopt_rename_renames_the_rows_and_a_second_export_needs_no_annotations(cli_run, db_url: str, tmp_path: Path) -> None:
    fill_like_the_service(db_url)
    code, out, err = cli_run("adopt", "--all", "--rename", "--db", db_url, env=ENV)
    assert code == 0, err
    assert "  adopted agent message-classifier (renamed from 'Message Classifier')\n" in out
    assert _row_names(db_url, AgentConfig) == ["message-classifier"]
    assert _row_names(db_url, LLMProvider) == ["ollama-local", "openai-gpt-4"]
    out_dir = tmp_path / "renamed"
    code, _, err = cli_run("export", "--db", db_url, "--out", str(out_dir), env=ENV)
    assert code == 0 and "named" not in err
    assert "reconciler/row-name" not in "".join(p.read_text() for p in out_dir.iterdir())
    assert cli_run("plan", str(out_dir), "--db", db_url, "--detailed-exitcode", env=ENV) == (0, NO_CHANGES, "")
    code, out, _ = cli_run("history", "--db", db_url, "-o", "json")
    adopted = {a["name"]: a for a in yaml.safe_load(out)[0]["plan"]["adopted"]}
    assert adopted["message-classifier"] == {"kind": "Agent", "name": "message-classifier", "renamed_from": "Message Classifier", "row_name": None}


def test_a_kept_row_name_survives_changes_and_removing_the_annotation_renames_the_row(cli_run, db_url: str, tmp_path: Path) -> None:
    out_dir = tmp_path / "m"
    _export_and_adopt(cli_run, db_url, out_dir)
    agents = out_dir / "agents.yaml"
    agents.write_text(agents.read_text().replace("temperature: 0.7", "temperature: 0.4"))
    code, out, err = cli_run("apply", str(out_dir), "--db", db_url, "--auto-approve", env=ENV)
    assert code == 0, err
    assert "  ~ agent message-classifier: temperature 0.7 → 0.4\n" in out
    assert _row_names(db_url, AgentConfig) == ["Message Classifier"]
    code, out, _ = cli_run("get", "agents", "message-classifier", "--db", db_url, "-o", "yaml")  # found by its manifest name too
    assert code == 0 and yaml.safe_load(out)[0]["name"] == "Message Classifier"

    agents.write_text(agents.read_text().replace("  annotations:\n    reconciler/row-name: Message Classifier\n", ""))
    code, out, _ = cli_run("plan", str(out_dir), "--db", db_url, env=ENV)
    assert code == 0
    assert '    name "Message Classifier" → "message-classifier"\n' in out
    assert cli_run("apply", str(out_dir), "--db", db_url, "--auto-approve", env=ENV)[0] == 0
    assert _row_names(db_url, AgentConfig) == ["message-classifier"]
    assert cli_run("plan", str(out_dir), "--db", db_url, "--detailed-exitcode", env=ENV)[:2] == (0, NO_CHANGES)
    assert cli_run("drift", "--db", db_url, "--detailed-exitcode")[0] == 0


def test_renaming_a_kept_row_outside_reconciler_is_drift_and_apply_puts_the_name_back(cli_run, db_url: str, tmp_path: Path) -> None:
    out_dir = tmp_path / "m"
    _export_and_adopt(cli_run, db_url, out_dir)
    engine = seed_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE agent_configs SET name = 'Classifier v2' WHERE name = 'Message Classifier'"))
    engine.dispose()
    code, out, _ = cli_run("drift", "--db", db_url, "--detailed-exitcode")
    assert code == 2
    assert '  ~ agent message-classifier: name "Message Classifier" → "Classifier v2" (drift: changed outside reconciler since apply #1)' in out
    code, out, _ = cli_run("plan", str(out_dir), "--db", db_url, env=ENV)
    assert '  ~ agent message-classifier: name "Classifier v2" → "Message Classifier" (drift: changed outside reconciler since apply #1)\n' in out
    assert cli_run("apply", str(out_dir), "--db", db_url, "--auto-approve", env=ENV)[0] == 0
    engine = seed_engine(db_url)
    try:
        with Session(engine) as s:
            assert get_by_name(s, AgentConfig, "Message Classifier") is not None
    finally:
        engine.dispose()


def test_a_new_manifest_can_give_its_row_a_name(cli_run, write_manifests, db_url: str) -> None:
    root = write_manifests({"p.yaml": """
        apiVersion: reconciler/v1
        kind: Provider
        metadata:
          name: ollama-lab
          annotations: {reconciler/row-name: "Ollama (lab)"}
        spec: {type: ollama, base_url: "http://127.0.0.1:9"}
        """})
    code, out, err = cli_run("apply", str(root), "--db", db_url, "--auto-approve", "--no-validate")
    assert code == 0, err
    assert _row_names(db_url, LLMProvider) == ["Ollama (lab)"]
    assert cli_run("plan", str(root), "--db", db_url, "--detailed-exitcode")[:2] == (0, NO_CHANGES)
    code, out, _ = cli_run("export", "--db", db_url)
    assert yaml.safe_load(out)["metadata"] == {"name": "ollama-lab", "annotations": {"reconciler/row-name": "Ollama (lab)"}}


def test_a_plan_before_adopting_refuses_to_create_a_second_row_with_the_kept_name(cli_run, sqlite_url: str, tmp_path: Path) -> None:
    fill_like_the_service(sqlite_url)
    out_dir = tmp_path / "m"
    assert cli_run("export", "--db", sqlite_url, "--out", str(out_dir), env=ENV)[0] == 0
    code, _, err = cli_run("plan", str(out_dir), "--db", sqlite_url, env=ENV)
    assert code == 1 and "Traceback" not in err
    assert (
        "error: Agent \"message-classifier\": its row would be named 'Message Classifier', the name of an existing agent that reconciler does not manage\n"
        "  hint: adopt it with `reconciler adopt agent/message-classifier`"
    ) in err


def test_adopt_refuses_two_rows_that_would_share_a_manifest_name(cli_run, sqlite_url: str) -> None:
    fill_like_the_service(sqlite_url)
    engine = seed_engine(sqlite_url)
    with Session(engine) as s:
        provider = get_by_name(s, LLMProvider, "Ollama Local")
        s.add(AgentConfig(name="message classifier", provider_id=provider.id, model_name="llama3", system_prompt=""))
        s.commit()
    engine.dispose()
    code, _, err = cli_run("adopt", "--all", "--db", sqlite_url, env=ENV)
    assert code == 1 and "Traceback" not in err
    assert "cannot adopt Agent 'message classifier' as 'message-classifier': the agent 'Message Classifier' has that name too" in err
    assert cli_run("history", "--db", sqlite_url, "-o", "json")[1] == "[]\n"  # nothing was adopted


def test_validate_checks_row_name_annotations(cli_run, write_manifests) -> None:
    root = write_manifests({"m.yaml": """
        apiVersion: reconciler/v1
        kind: Provider
        metadata: {name: a, annotations: {reconciler/row-name: "Shared"}}
        spec: {type: ollama, base_url: "http://127.0.0.1:9"}
        ---
        apiVersion: reconciler/v1
        kind: Provider
        metadata: {name: b, annotations: {reconciler/row-name: "Shared"}}
        spec: {type: ollama, base_url: "http://127.0.0.1:9"}
        ---
        apiVersion: reconciler/v1
        kind: Provider
        metadata: {name: c, annotations: {reconciler/row-name: "  "}}
        spec: {type: ollama, base_url: "http://127.0.0.1:9"}
        ---
        apiVersion: reconciler/v1
        kind: Task
        metadata: {name: t}
        spec: {response_schema: {type: object}}
        ---
        apiVersion: reconciler/v1
        kind: Agent
        metadata: {name: g}
        spec: {provider: a, model_name: m}
        ---
        apiVersion: reconciler/v1
        kind: Assignment
        metadata: {name: g-t, annotations: {reconciler/row-name: "G T"}}
        spec: {agent: g, task: t}
        ---
        apiVersion: reconciler/v1
        kind: Run
        metadata: {name: r, annotations: {reconciler/row-name: "Run R"}}
        spec: {assignment: g-t, inputs: [hello]}
        """})
    code, _, err = cli_run("validate", str(root))
    assert code == 1
    assert "m.yaml:8:35: error: Provider \"b\" metadata.annotations.reconciler/row-name: row name 'Shared' is already the row name of Provider \"a\"" in err
    assert "error: Provider \"c\" metadata.annotations.reconciler/row-name: found '  '; a row name is 1 to 255 characters" in err
    assert "error: Assignment \"g-t\" metadata.annotations.reconciler/row-name: Assignment rows have no name column" in err
    assert "error: Run \"r\" metadata.annotations.reconciler/row-name: Run rows are found by their manifest name" in err
    assert "Found 4 errors; nothing was changed." in err


def test_reconciler_test_finds_an_agent_and_task_by_manifest_or_row_name(cli_run, sqlite_url: str, tmp_path: Path) -> None:
    from reconciler.runs.store import find_task, load_agent
    from reconciler.state.db import open_engine

    _export_and_adopt(cli_run, sqlite_url, tmp_path / "m")
    engine = open_engine(sqlite_url, create=False)
    assert engine is not None
    for agent, task in (("message-classifier", "classify-message"), ("Message Classifier", "Classify Message")):
        context, task_config = load_agent(engine, agent), find_task(engine, task)
        assert (context.agent.name, context.provider.name, task_config.name) == ("Message Classifier", "Ollama Local", "Classify Message")
    engine.dispose()
