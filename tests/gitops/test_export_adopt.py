"""Export the database as manifests and adopt unmanaged rows: export, adopt, plan shows no changes."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, insert

from reconciler.state.db import database_url
from reconciler.state.tables import (
    agent_configs,
    agent_task_assignments,
    llm_providers,
    task_configs,
    utcnow,
)
from tests.gitops.helpers import config

SEED_TABLES = [llm_providers, agent_configs, task_configs, agent_task_assignments]
SEED_KEY = Fernet.generate_key().decode()
API_KEY = "sk-seed-0123456789abcdef"


def fill_like_the_seed_service(db_url: str) -> None:
    """Tables and rows as the seed's REST service creates them: display names, a Fernet-encrypted key."""
    engine = create_engine(database_url(db_url))
    SEED_TABLES[0].metadata.create_all(engine, tables=SEED_TABLES)
    now = utcnow()
    pid, aid, tid = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(insert(llm_providers), {
            "id": pid, "name": "OpenAI Prod", "type": "openai", "base_url": "https://api.openai.com/v1",
            "api_key_encrypted": Fernet(SEED_KEY.encode()).encrypt(API_KEY.encode()), "is_active": True,
            "validation_status": "connected", "created_at": now, "updated_at": now,
        })
        conn.execute(insert(agent_configs), {
            "id": aid, "name": "Message Classifier", "description": "Classifies messages", "provider_id": pid,
            "model_name": "gpt-4o-mini", "system_prompt": "Classify the message.\nAnswer with JSON.", "temperature": 0.3,
            "max_tokens": 500, "is_active": True, "created_at": now, "updated_at": now,
        })
        conn.execute(insert(task_configs), {
            "id": tid, "name": "classify-message", "description": None, "is_active": False,
            "response_schema": {"type": "object", "properties": {"category": {"type": "string"}}, "required": ["category"]},
            "created_at": now, "updated_at": now,
        })
        conn.execute(insert(agent_task_assignments), {"id": uuid.uuid4(), "agent_id": aid, "task_id": tid, "is_active": True, "assigned_at": now})
    engine.dispose()


def test_export_then_plan_shows_no_changes_for_managed_rows(cli_run, write_manifests, db_url: str, tmp_path: Path) -> None:
    docs = config({"triage": 0.2, "summary": 0.4}, protected={"agent/triage"})
    docs["providers.yaml"] = docs["providers.yaml"].replace("spec: {", "spec: {api_key: {from_env: OPENAI_API_KEY}, ")
    env = {"OPENAI_API_KEY": "sk-very-secret", "RECONCILER_SECRET_KEY": SEED_KEY}
    root = write_manifests(docs)
    code, _, err = cli_run("apply", str(root), "--db", db_url, "--auto-approve", env=env)
    assert code == 0, err

    out_dir = tmp_path / "exported"
    code, out, err = cli_run("export", "--db", db_url, "--out", str(out_dir))
    assert code == 0, err
    assert out == f"Exported 6 resources to {out_dir}/.\n"
    assert sorted(p.name for p in out_dir.iterdir()) == ["agents.yaml", "assignments.yaml", "providers.yaml", "tasks.yaml"]
    provider = yaml.safe_load((out_dir / "providers.yaml").read_text())
    assert provider["spec"]["api_key"] == {"from_env": "OPENAI_API_KEY"}
    agents = list(yaml.safe_load_all((out_dir / "agents.yaml").read_text()))
    assert agents[1]["metadata"] == {"name": "triage", "annotations": {"reconciler/prevent-destroy": "true"}}
    exported_text = "".join(p.read_text() for p in out_dir.iterdir())
    assert "sk-very-secret" not in exported_text

    assert cli_run("plan", str(out_dir), "--db", db_url, "--detailed-exitcode", env=env) == (0, "No changes. The database matches the manifests.\n", "")
    code, _, err = cli_run("export", "--db", db_url, "--out", str(out_dir))
    assert code == 1 and "export directory exists and is not empty" in err


def test_seed_database_export_adopt_then_plan_shows_no_changes(cli_run, db_url: str, tmp_path: Path) -> None:
    fill_like_the_seed_service(db_url)
    out_dir = tmp_path / "from-seed"
    code, _, err = cli_run("export", "--db", db_url, "--out", str(out_dir))
    assert code == 0, err
    assert "OPENAI_PROD_API_KEY is a placeholder" in err and "adopt --all" in err
    assert API_KEY not in "".join(p.read_text() for p in out_dir.iterdir())
    (assignment,) = yaml.safe_load_all((out_dir / "assignments.yaml").read_text())
    assert assignment["metadata"]["name"] == "message-classifier-classify-message"
    assert assignment["spec"] == {"agent": "message-classifier", "task": "classify-message"}
    env = {"RECONCILER_SECRET_KEY": SEED_KEY, "OPENAI_PROD_API_KEY": API_KEY}
    assert cli_run("validate", str(out_dir))[0] == 0

    code, out, err = cli_run("adopt", "--all", "--db", db_url, env=env)
    assert code == 0, err
    assert "  adopted agent message-classifier (keeps its row name 'Message Classifier')" in out
    assert "Adopted 4 resources (#1)." in out
    assert cli_run("plan", str(out_dir), "--db", db_url, "--detailed-exitcode", env=env) == (0, "No changes. The database matches the manifests.\n", "")
    assert cli_run("drift", "--db", db_url, "--detailed-exitcode")[0] == 0
    code, out, _ = cli_run("adopt", "agent/message-classifier", "--db", db_url)
    assert (code, out) == (0, "  agent/message-classifier is already managed\n")


def test_adopt_without_the_seed_key_says_the_key_will_be_re_encrypted(cli_run, sqlite_url: str, tmp_path: Path) -> None:
    fill_like_the_seed_service(sqlite_url)
    out_dir = tmp_path / "from-seed"
    assert cli_run("export", "--db", sqlite_url, "--out", str(out_dir))[0] == 0
    env = {"RECONCILER_SECRET_KEY": Fernet.generate_key().decode(), "OPENAI_PROD_API_KEY": API_KEY}
    code, out, err = cli_run("adopt", "provider/openai-prod", "--db", sqlite_url, env=env)
    assert code == 0 and "cannot be decrypted with reconciler's secret key" in err
    code, out, err = cli_run("adopt", "*/*", "--db", sqlite_url, env=env)
    assert code == 0 and "  provider/openai-prod is already managed" in out and "Adopted 3 resources (#2)." in out
    code, out, err = cli_run("plan", str(out_dir), "--db", sqlite_url, env=env)
    assert code == 0, err
    assert "~ provider openai-prod: api_key (sensitive value changed)" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("agent/nope",), "'agent/nope' matches nothing in the database"),
        ((), "give KIND/NAME arguments or --all"),
        (("robot/x",), "is not KIND/NAME"),
    ],
    ids=["matches-nothing", "no-arguments", "bad-kind"],
)
def test_adopt_bad_input(cli_run, sqlite_url: str, args: tuple[str, ...], message: str) -> None:
    fill_like_the_seed_service(sqlite_url)
    code, _, err = cli_run("adopt", *args, "--db", sqlite_url)
    assert code == 1 and message in err and "Traceback" not in err
