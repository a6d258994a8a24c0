"""End to end against the real embedded model: apply, run, resume after the process is killed
mid-run, and a run that survives the model server being killed (it is restarted)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from reconciler.state.tables import run_results
from tests.runs.conftest import spawn_run

pytestmark = [pytest.mark.llm, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]

MESSAGES = [
    ("The app crashes when I log in on iOS", "bug"),
    ("Please add an option to export reports as PDF", "feature"),
    ("How do I reset my password?", "question"),
    ("I think the new design looks cleaner", "discussion"),
    ("Clicking save deletes my draft", "bug"),
    ("Could you add a calendar view?", "feature"),
]


def _manifests(write_manifests, n: int) -> Path:  # type: ignore[no-untyped-def]
    config = (REPO / "manifests" / "providers.yaml").read_text() + "\n---\n" + (REPO / "manifests" / "agents.yaml").read_text()
    config += "\n---\n" + (REPO / "manifests" / "tasks.yaml").read_text()
    inputs = "\n".join(json.dumps({"text": t, "category": c}) for t, c in (MESSAGES[i % len(MESSAGES)] for i in range(n)))
    run = f"""
apiVersion: reconciler/v1
kind: Run
metadata: {{name: local-e2e}}
spec:
  assignment: message-classifier-classify-message
  inputs_file: data/e2e.jsonl
  prompt_template: "Message: {{text}}"
  expected: category
  concurrency: 1
"""
    labelled = (REPO / "manifests" / "data" / "messages.jsonl").read_text()  # the task's evaluation
    return write_manifests({"config.yaml": config, "run.yaml": run, "data/e2e.jsonl": inputs + "\n", "data/messages.jsonl": labelled})


@pytest.fixture(autouse=True)
def _allow_requests(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import pydantic_ai.models

    from reconciler.llm import registry
    from reconciler.llm.llamacpp_shared import stop_shared_servers

    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", True)
    monkeypatch.setattr(registry, "_default", None)
    yield
    stop_shared_servers()  # in-process runs share a server; do not keep 400 MB alive for the rest of the session


def test_run_through_the_local_model(write_manifests, cli_run, sqlite_url: str) -> None:
    root = _manifests(write_manifests, 2)
    assert cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve")[0] == 0
    code, out, err = cli_run("run", "local-e2e", "--db", sqlite_url)
    assert "Run local-e2e:" in out, err
    results = json.loads(cli_run("runs", "results", "local-e2e", "--db", sqlite_url, "-o", "json")[1])
    assert len(results) == 2
    assert all(r["valid"] for r in results), results  # the grammar-constrained output fits the schema
    assert all(r["output"]["category"] in {"bug", "feature", "question", "discussion"} for r in results)
    detail = json.loads(cli_run("runs", "show", "local-e2e", "--db", sqlite_url, "-o", "json")[1])
    assert detail["status"] == "completed"
    assert detail["config_snapshot"]["provider"]["model_file"]["sha256"]
    code, out, err = cli_run("test", "message-classifier", "--prompt", "Add dark mode", "--task", "classify-message", "--db", sqlite_url, "--json")
    assert code == 0, err
    assert json.loads(json.loads(out)["response"])["category"] in {"bug", "feature", "question", "discussion"}


def _children(pid: int) -> list[int]:
    """Child processes of any thread of ``pid`` (the server is started from a worker thread)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def _wait_for_items(proc: subprocess.Popen[str], count: int) -> list[dict]:
    events = []
    assert proc.stdout is not None
    while len([e for e in events if e["event"] == "item"]) < count:
        line = proc.stdout.readline()
        assert line, proc.stderr.read() if proc.stderr else "no output"
        events.append(json.loads(line))
    return events


def test_resume_after_the_run_process_is_killed(write_manifests, cli_run, sqlite_url: str, tmp_path: Path) -> None:
    total = 8  # once the examples are in the server's prompt cache an item takes well under a second
    root = _manifests(write_manifests, total)
    assert cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve")[0] == 0
    engine = create_engine(sqlite_url)

    def stored() -> int:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(run_results)).scalar_one()

    proc = spawn_run("local-e2e", sqlite_url, tmp_path)
    try:
        _wait_for_items(proc, 1)
        deadline = time.monotonic() + 60
        while stored() == 0 and time.monotonic() < deadline:  # a finished item is stored within a second
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    stored_before = stored()
    assert 1 <= stored_before < total
    code, out, err = cli_run("run", "local-e2e", "--db", sqlite_url, "--json")
    summary = json.loads(out.splitlines()[-1])
    assert summary["processed_now"] == total - stored_before, err
    assert summary["items_succeeded"] + summary["items_failed"] == total
    with engine.connect() as conn:
        indexes = sorted(conn.execute(select(run_results.c.item_index)).scalars())
    assert indexes == list(range(total))  # nothing duplicated, nothing missing


def test_run_survives_the_model_server_being_killed(write_manifests, cli_run, sqlite_url: str, tmp_path: Path) -> None:
    root = _manifests(write_manifests, 3)
    assert cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve")[0] == 0
    proc = spawn_run("local-e2e", sqlite_url, tmp_path)
    try:
        _wait_for_items(proc, 1)
        servers = _children(proc.pid)
        assert servers, "the run should have started the embedded server as its child"
        for pid in servers:
            os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    summary = json.loads(out.splitlines()[-1])
    assert summary["items_unfinished"] == 0, err
    assert summary["items_succeeded"] + summary["items_failed"] == 3
