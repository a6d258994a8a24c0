"""`watch` starts runs with trigger: on_apply as `apply` does: in the background, once, with the
configuration just applied, reporting failures without dying. The LLM is the stub OpenAI-compatible
server (tests.stub_openai) or, in-process, the FunctionModel of the run tests."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.gitops.helpers import WatchProcess
from tests.runs.conftest import CONFIG, RUN, STUB_CONFIG, keyword_classifier
from tests.stub_openai import Reply, StubServer

ON_APPLY = RUN + "  trigger: on_apply\n"


def _prompt(request: dict) -> str:
    return next(m["content"] for m in request["messages"] if m["role"] == "user")


def _run_row(cli_run, db: str, name: str) -> dict:  # type: ignore[no-untyped-def]
    code, out, err = cli_run("runs", "show", name, "--db", db, "-o", "json")
    assert code == 0, err
    return json.loads(out)


def _other_run(name: str, text: str) -> str:
    return f"""
apiVersion: reconciler/v1
kind: Run
metadata: {{name: {name}}}
spec:
  assignment: classifier-classify
  trigger: on_apply
  inputs: [{{text: "{text}"}}, {{text: "{text} again"}}]
"""


@pytest.mark.usefixtures("real_llm_requests")
def test_watch_once_starts_an_on_apply_run_once_and_reports_a_failed_one(cli_run, write_manifests, sqlite_url: str) -> None:
    def behaviour(request: dict, n: int) -> Reply | dict:
        prompt = _prompt(request)
        return Reply(500) if "BROKEN" in prompt else keyword_classifier(prompt)

    with StubServer(behaviour) as stub:
        root = write_manifests({"config.yaml": STUB_CONFIG.replace("BASE", stub.base_url), "run.yaml": ON_APPLY})
        code, out, err = cli_run("watch", str(root), "--db", sqlite_url, "--once", "--no-validate")
        assert code == 0, out + err
        assert "    starting run sample (trigger: on_apply)" in out
        assert "run sample (apply #1): started: 4 of 4 items to do" in out
        assert "run sample (apply #1): completed — 4/4 valid, 0 failed, accuracy 100%" in out
        assert len(stub.requests) == 4

        # nothing changed: the completed run is not started again
        code, out, _ = cli_run("watch", str(root), "--db", sqlite_url, "--once", "--no-validate")
        assert code == 0 and "startup: in sync" in out and "run sample" not in out
        assert len(stub.requests) == 4

        # a run whose every request gets a server error: the provider looks down, the run is
        # interrupted (its items stay unfinished), reported with the reason and a hint; --once exits 1
        write_manifests({"broken.yaml": _other_run("broken", "BROKEN")})
        code, out, err = cli_run("watch", str(root), "--db", sqlite_url, "--once", "--no-validate", "--json")
    assert code == 1
    events = [json.loads(line) for line in out.splitlines()]
    finished = next(e for e in events if e["event"] == "run" and e["phase"] == "finished")
    assert (finished["run"], finished["status"], finished["apply_id"]) == ("broken", "interrupted", 2)
    assert finished["errors"][0]["message"].startswith("stopped: provider 'stub' (openai) looks down: 5 transient failures in a row (last: ")
    assert finished["errors"][0]["message"].endswith("2 of 2 items unfinished; run `reconciler run broken` again to resume")
    assert "`reconciler runs show broken`" in finished["errors"][0]["hint"]
    assert (finished["summary"]["items_failed"], finished["summary"]["items_unfinished"]) == (0, 2)
    assert _run_row(cli_run, sqlite_url, "sample")["status"] == "completed"
    assert "Traceback" not in out + err


def test_a_run_that_cannot_start_is_reported_and_stays_pending(cli_run, write_manifests, fake_model, sqlite_url: str) -> None:
    fake_model(keyword_classifier)
    inactive = CONFIG.replace("kind: Agent\nmetadata: {name: classifier}\nspec: {", "kind: Agent\nmetadata: {name: classifier}\nspec: {is_active: false, ")
    root = write_manifests({"config.yaml": inactive, "run.yaml": ON_APPLY})
    code, out, _ = cli_run("watch", str(root), "--db", sqlite_url, "--once")
    assert code == 1
    assert "run sample (apply #1): could not start; it stays pending" in out
    assert "error: run 'sample' cannot start: agent 'classifier' is inactive (is_active: false)" in out
    assert "hint: set is_active: true in the manifests and apply" in out
    assert _run_row(cli_run, sqlite_url, "sample")["status"] == "pending"


def test_a_stopping_watch_halts_its_runs_between_items_and_they_resume(cli_run, write_manifests, fake_model, sqlite_url: str) -> None:
    """RunStarter as `watch` uses it: the first answer waits until the stop was requested."""
    from reconciler.gitops.watch_runs import RunStarter

    asked, gate = threading.Event(), threading.Event()

    def answer(prompt: str) -> dict:
        asked.set()
        gate.wait(30)
        return keyword_classifier(prompt)

    prompts = fake_model(answer)
    root = write_manifests({"config.yaml": CONFIG, "run.yaml": RUN.replace("concurrency: 3", "concurrency: 1")})
    assert cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve")[0] == 0
    events: list = []
    starter = RunStarter(sqlite_url, events.append)
    starter.start(("sample",), 1)
    assert [(e.phase, e.status) for e in events] == [("started", "running")]  # claimed before start returned
    assert asked.wait(30)

    stopping = threading.Thread(target=starter.stop, kwargs={"grace": 30})
    stopping.start()
    assert starter.halt.wait(10)
    gate.set()  # the item in flight finishes; no other item is taken
    stopping.join(60)
    finished = events[-1]
    assert (finished.phase, finished.status) == ("finished", "interrupted")
    assert finished.errors[0].message == (
        "stopped: the process running it was asked to stop; 3 of 4 items unfinished; run `reconciler run sample` again to resume"
    )
    assert len(prompts) == 1

    code, out, err = cli_run("run", "sample", "--db", sqlite_url)
    assert code == 0, err
    assert "Run sample: completed — 4/4 valid" in out
    assert len(prompts) == 4  # only the three unfinished items were sent


@pytest.mark.slow
def test_watch_runs_in_the_background_with_the_configuration_just_applied(git_repo, cli_run, sqlite_url: str) -> None:
    gate = threading.Event()

    def behaviour(request: dict, n: int) -> Reply | dict:
        prompt = _prompt(request)
        if "BROKEN" in prompt:
            return Reply(400, body={"error": {"message": "this request is refused", "type": "invalid_request_error"}})
        gate.wait(60)  # the first run's items wait until the loop has applied a later change
        return keyword_classifier(prompt)

    with StubServer(behaviour) as stub:
        config = STUB_CONFIG.replace("BASE", stub.base_url)
        repo = git_repo()
        repo.commit({"config.yaml": config, "run.yaml": ON_APPLY}, "config and an on_apply run")
        w = WatchProcess("manifests", "--db", sqlite_url, "--interval", "0.3", "--debounce", "200", "--retry-initial", "0.2", cwd=repo.root)
        try:
            first = w.wait_for(lambda e: e.get("trigger") == "startup")
            assert (first["outcome"], first["runs"]) == ("applied", ["sample"])
            w.wait_for(lambda e: e["event"] == "run" and e["phase"] == "started")

            # the run is working (its requests wait): the loop still applies the next commit
            repo.commit({"config.yaml": config.replace("temperature: 0.0", "temperature: 0.5")}, "warmer")
            warmer = w.wait_for(lambda e: e.get("trigger") == "files")
            assert (warmer["outcome"], warmer["changes"], warmer["runs"]) == ("applied", ["~ agent classifier: temperature 0.0 → 0.5"], [])
            gate.set()
            done = w.wait_for(lambda e: e["event"] == "run" and e["phase"] == "finished")
            assert (done["run"], done["status"], done["apply_id"], done["errors"]) == ("sample", "completed", 1, [])
            assert json.loads(cli_run("runs", "show", "sample", "--db", sqlite_url, "-o", "json")[1])["config_snapshot"]["agent"]["temperature"] == 0.0

            # a run that fails is reported with a hint, and the loop goes on
            repo.commit({"broken.yaml": _other_run("broken", "BROKEN")}, "a run the provider refuses")
            broken = w.wait_for(lambda e: e["event"] == "run" and e["phase"] == "finished")
            assert (broken["run"], broken["status"]) == ("broken", "failed")
            assert "`reconciler runs show broken`" in broken["errors"][0]["hint"]
            repo.commit({"config.yaml": config.replace("temperature: 0.0", "temperature: 0.7")}, "warmer still")
            later = w.wait_for(lambda e: e.get("trigger") == "files" and e["outcome"] == "applied")
            assert later["runs"] == []
            checked = w.wait_for(lambda e: e.get("trigger") == "interval")
            assert checked["outcome"] == "in-sync"  # finished runs are not drift
        finally:
            code = w.terminate()
        assert code == 0
        started = [e["run"] for e in w.seen if e["event"] == "run" and e["phase"] == "started"]
        assert started == ["sample", "broken"]  # each once
        assert sum(1 for r in stub.requests if "BROKEN" not in _prompt(r)) == 4


def test_watch_without_runs_never_imports_pydantic_ai(write_manifests, sqlite_url: str) -> None:
    from tests.gitops.helpers import config

    root = write_manifests(config())
    probe = (
        "import sys\nfrom reconciler.cli import main\n"
        "try:\n    main(['watch', R, '--db', D, '--once', '--no-validate'])\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "print(sorted(m for m in ('pydantic_ai', 'openai', 'reconciler.runs.service') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", f"R = {str(root)!r}; D = {sqlite_url!r}\n" + probe],
        capture_output=True, text=True, check=True, env={"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PATH": "/usr/bin:/bin"},
    ).stdout
    assert out.strip().splitlines()[-1] == "[]"
