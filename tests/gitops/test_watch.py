"""`reconciler watch` in a subprocess: apply on change, drift on an interval, bad input, DB down, SIGTERM."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.gitops.helpers import TcpProxy, WatchProcess, agent, assignment, config
from tests.gitops.test_drift import sql


def _applied(trigger: str):  # type: ignore[no-untyped-def]
    return lambda e: e["trigger"] == trigger and e["outcome"] == "applied"


@pytest.mark.slow
def test_watch_applies_heals_survives_bad_manifests_and_stops_on_sigterm(write_manifests, db_url: str, tmp_path: Path) -> None:
    root = write_manifests(config({"triage": 0.2}))
    w = WatchProcess(str(root), "--db", db_url, "--interval", "0.3", "--self-heal", "--debounce", "300", cwd=tmp_path)
    try:
        first = w.wait_for(lambda e: e["trigger"] == "startup")
        assert (first["outcome"], first["summary"]) == ("applied", {"create": 4, "update": 0, "delete": 0})

        sql(db_url, "UPDATE agent_configs SET system_prompt = 'edited by hand'")
        healed = w.wait_for(_applied("self-heal"))
        assert healed["changes"] == ["~ agent triage: system_prompt \"edited by hand\" → \"be brief\" (drift: changed outside reconciler since apply #1)"]
        assert [(d["kind"], d["name"]) for d in healed["drift"]] == [("Agent", "triage")]

        # a `git pull` that writes many files at once: one reconcile
        many = {f"team-{i}.yaml": agent(f"bot-{i}") + "---" + assignment(f"bot-{i}-classify", f"bot-{i}", "classify") for i in range(12)}
        write_manifests(many)
        batch = w.wait_for(lambda e: e["trigger"] == "files")
        assert (batch["outcome"], batch["summary"]["create"], len(batch["files"])) == ("applied", 24, 12)

        # a broken commit: reported, nothing applied, the loop goes on
        write_manifests({"agents.yaml": agent("triage", temperature=9.0), "team-0.yaml": "kind: [oops"})
        broken = w.wait_for(lambda e: e["trigger"] == "files")
        assert broken["outcome"] == "invalid" and broken["apply_id"] is None
        assert {Path(p["file"]).name for p in broken["errors"]} == {"agents.yaml", "team-0.yaml"}
        write_manifests({"agents.yaml": agent("triage", temperature=0.4), "team-0.yaml": many["team-0.yaml"]})
        fixed = w.wait_for(lambda e: e["trigger"] == "files" and e["outcome"] != "invalid")
        assert (fixed["outcome"], fixed["changes"]) == ("applied", ["~ agent triage: temperature 0.2 → 0.4"])
    finally:
        code = w.terminate()
    assert code == 0
    assert w.wait_for(lambda e: e["outcome"] == "stopped")


@pytest.mark.slow
def test_watch_report_only_reports_drift_and_leaves_it(write_manifests, sqlite_url: str, tmp_path: Path) -> None:
    root = write_manifests(config({"triage": 0.2}))
    w = WatchProcess(str(root), "--db", sqlite_url, "--interval", "0.2", "--no-validate", cwd=tmp_path)
    try:
        w.wait_for(_applied("startup"))
        sql(sqlite_url, "UPDATE agent_configs SET temperature = 1.5")
        found = w.wait_for(lambda e: e["outcome"] == "drift")
        assert found["drift"][0]["fields"][0] == {"field": "temperature", "old": 0.2, "new": 1.5, "sensitive": False, "drift": True}
        again = w.wait_for(lambda e: e["trigger"] == "interval")
        assert again["outcome"] == "drift"  # still there: report-only never writes
        sql(sqlite_url, "UPDATE llm_providers SET validation_status = 'failed', validation_error = 'connection refused'")
        status = w.wait_for(lambda e: e["provider_status"])
        assert status["provider_status"] == [{"name": "openai", "from": "pending", "to": "failed", "error": "connection refused"}]
    finally:
        assert w.terminate() == 0


@pytest.mark.slow
@pytest.mark.postgres
def test_watch_survives_the_database_being_briefly_down(write_manifests, pg_url: str, tmp_path: Path) -> None:
    real = make_url(pg_url)
    proxy = TcpProxy(real.host or "127.0.0.1", real.port or 5432)
    proxy.up()
    via_proxy = real.set(port=proxy.port).render_as_string(hide_password=False)
    root = write_manifests(config({"triage": 0.2}))
    w = WatchProcess(str(root), "--db", via_proxy, "--interval", "0.3", "--debounce", "200", cwd=tmp_path)
    try:
        w.wait_for(_applied("startup"))
        proxy.down()
        write_manifests({"agents.yaml": agent("triage", temperature=0.9)})
        failed = w.wait_for(lambda e: e["trigger"] == "files")
        assert failed["outcome"] == "error" and "database error" in failed["errors"][0]["message"]
        proxy.up()
        retried = w.wait_for(lambda e: e["outcome"] == "applied")
        assert (retried["trigger"], retried["changes"]) == ("retry", ["~ agent triage: temperature 0.2 → 0.9"])
    finally:
        code = w.terminate()
        proxy.down()
    assert code == 0


def test_watch_once_and_bad_paths(cli_run, write_manifests, sqlite_url: str) -> None:
    root = write_manifests(config())
    code, out, _ = cli_run("watch", str(root), "--db", sqlite_url, "--once")
    assert code == 0 and "startup: applied #1: 4 created, 0 updated, 0 deleted" in out
    code, out, err = cli_run("watch", "nowhere", "--db", sqlite_url)
    assert code == 1 and "cannot watch nowhere: no such file or directory" in err
    write_manifests({"agents.yaml": "kind: Agent\n"})
    code, out, _ = cli_run("watch", str(root), "--db", sqlite_url, "--once")
    assert code == 1 and "manifests are invalid; applied nothing" in out


@pytest.mark.slow
def test_watch_waits_for_a_git_operation_to_finish(git_repo, sqlite_url: str, tmp_path: Path) -> None:
    repo = git_repo()
    repo.commit(config({"triage": 0.2}), "first")
    w = WatchProcess("manifests", "--db", sqlite_url, "--interval", "0.2", "--debounce", "200", cwd=repo.root)
    try:
        w.wait_for(_applied("startup"))
        lock = repo.root / ".git" / "index.lock"
        lock.write_text("")  # what git holds while a checkout or pull writes the working tree
        repo.write({"agents.yaml": agent("triage", temperature=0.5)})
        deferred = w.wait_for(lambda e: e["trigger"] == "files")
        assert deferred["outcome"] == "deferred"
        lock.unlink()
        done = w.wait_for(lambda e: e["trigger"] == "files" and e["outcome"] != "deferred")
        assert (done["outcome"], done["changes"]) == ("applied", ["~ agent triage: temperature 0.2 → 0.5"])
        assert done["git"]["subject"] == "first" and done["git"]["dirty"] is True
    finally:
        assert w.terminate() == 0


class _OpenAIModels(BaseHTTPRequestHandler):
    """Just enough of an OpenAI-compatible server for provider validation: GET /v1/models."""

    def do_GET(self) -> None:
        body = json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]}).encode()
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.slow
def test_watch_validates_changed_providers_and_survives_an_unreachable_one(write_manifests, sqlite_url: str, tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OpenAIModels)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    docs = config({"triage": 0.2})  # its provider points at 127.0.0.1:9, where nothing listens
    root = write_manifests(docs)
    w = WatchProcess(str(root), "--db", sqlite_url, "--interval", "0.3", "--debounce", "200", "--validation-timeout", "5", cwd=tmp_path)
    try:
        w.wait_for(_applied("startup"))
        live = docs["providers.yaml"].replace("http://127.0.0.1:9/v1", f"http://127.0.0.1:{server.server_port}/v1")
        write_manifests({"providers.yaml": live})
        moved = w.wait_for(lambda e: e["trigger"] == "files")
        assert moved["outcome"] == "applied"
        assert moved["provider_status"] == [{"name": "openai", "from": "error", "to": "connected", "error": None}]
    finally:
        code = w.terminate()
        server.shutdown()
    assert code == 0
