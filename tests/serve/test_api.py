"""The JSON API over a real database (SQLite and PostgreSQL) behind a real uvicorn server."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from reconciler.serve.api import API, ENDPOINTS
from reconciler.state.db import open_engine
from reconciler.state.queries import list_history, list_resources
from tests.serve.conftest import State


def test_lists_are_the_rows_reconciler_get_prints(state: State, live: Any) -> None:
    """The API's paginated queries give exactly what `reconciler get -o json` gives, row for row."""
    server = live(state.url)
    engine = open_engine(state.url, create=False)
    for what in ("providers", "agents", "tasks", "assignments"):
        response = server.get(f"{API}/{what}")
        assert response.status_code == 200
        assert response.json() == json.loads(json.dumps(list_resources(engine, what))), what
        assert response.headers["x-total-count"] == str(len(response.json()))
        assert response.headers["cache-control"] == "no-store"


def test_one_resource_by_name_and_by_id(state: State, live: Any) -> None:
    server = live(state.url)
    for what, name in (("providers", "stub"), ("agents", "classifier"), ("tasks", "classify"), ("assignments", "classifier-classify")):
        by_name = server.get(f"{API}/{what}/{name}")
        assert by_name.status_code == 200, by_name.text
        assert by_name.json()["name"] == name
        by_id = server.get(f"{API}/{what}/{by_name.json()['id']}")
        assert by_id.json() == by_name.json()
    assert server.get(f"{API}/assignments/classifier+classify").json()["name"] == "classifier-classify"
    provider = server.get(f"{API}/providers/stub").json()
    assert provider == {
        "name": "stub", "type": "openai", "base_url": state.base_url, "api_key": "(set, encrypted)", "is_active": True,
        "validation_status": "connected", "validation_error": None, "validated_at": provider["validated_at"], "managed": True,
        "id": provider["id"],
    }


@pytest.mark.parametrize(
    ("path", "names"),
    [
        pytest.param("agents?active=true", ["classifier", "loner"], id="active"),
        pytest.param("agents?active=false", ["dormant"], id="inactive"),
        pytest.param("agents?active_only=true", ["classifier", "loner"], id="seed-active-only"),
        pytest.param("agents?provider=spare", ["loner"], id="provider-by-name"),
        pytest.param("agents?provider=stub&active=true", ["classifier"], id="provider-and-active"),
        pytest.param("agents?provider=nobody", [], id="unknown-provider"),
        pytest.param("providers?active=false", ["spare"], id="inactive-providers"),
        pytest.param("agents/classifier/tasks", ["classifier-classify"], id="agent-tasks"),
        pytest.param("agents/loner/tasks", [], id="agent-without-tasks"),
        pytest.param("tasks/classify/agents", ["classifier-classify", "dormant-classify"], id="task-agents"),
        pytest.param("tasks/classify/agents?active=false", [], id="task-agents-inactive-assignments"),
        pytest.param("assignments?agent=dormant", ["dormant-classify"], id="assignments-by-agent"),
        pytest.param("assignments?task=triage", [], id="assignments-by-task"),
    ],
)
def test_filters(shared_state: State, live: Any, path: str, names: list[str]) -> None:
    response = live(shared_state.url).get(f"{API}/{path}")
    assert response.status_code == 200, response.text
    assert [r["name"] for r in response.json()] == names


def test_assignments_carry_agent_task_and_provider(shared_state: State, live: Any) -> None:
    """The seed's list_with_details: each assignment with its agent, task, provider name and type."""
    rows = live(shared_state.url).get(f"{API}/assignments").json()
    assert [{k: r[k] for k in ("name", "agent_name", "task_name", "provider_name", "provider_type", "is_active")} for r in rows] == [
        {"name": "classifier-classify", "agent_name": "classifier", "task_name": "classify", "provider_name": "stub", "provider_type": "openai", "is_active": True},
        {"name": "dormant-classify", "agent_name": "dormant", "task_name": "classify", "provider_name": "stub", "provider_type": "openai", "is_active": True},
    ]


def test_pagination_pages_through_everything_once(shared_state: State, live: Any) -> None:
    server = live(shared_state.url)
    everything = [r["name"] for r in server.get(f"{API}/agents").json()]
    paged = []
    for skip in range(5):
        page = server.get(f"{API}/agents", params={"skip": skip, "limit": 1})
        assert page.headers["x-total-count"] == str(len(everything))
        paged += [r["name"] for r in page.json()]
    assert paged == everything


def test_unknown_names_are_404_with_a_message(shared_state: State, live: Any) -> None:
    server = live(shared_state.url)
    for path in ("providers/nope", "agents/nope", "agents/nope/tasks", "tasks/nope", "tasks/nope/agents", "assignments/nope",
                 "runs/nope", "runs/nope/results", "history/999", "history/x", "agents/00000000-0000-0000-0000-000000000000"):
        response = server.get(f"{API}/{path}")
        assert response.status_code == 404, path
        body = response.json()
        assert body["status"] == 404 and body["error"] == "Not Found" and "no " in body["message"], body


def test_runs_results_and_snapshot(shared_state: State, live: Any) -> None:
    server = live(shared_state.url)
    runs = server.get(f"{API}/runs").json()
    assert [(r["name"], r["status"], r["items_total"], r["items_done"], r["accuracy"], r["assignment"]) for r in runs] == [
        ("sample", "completed", 4, 4, 1.0, "classifier-classify")
    ]
    detail = server.get(f"{API}/runs/sample").json()
    assert detail["config_sha256"] == runs[0]["config_sha256"]
    assert detail["config_snapshot"]["agent"]["system_prompt"] == "Classify the message."
    assert detail["spec"]["inputs"] == "4 items"
    assert server.get(f"{API}/runs/{detail['id']}").json()["name"] == "sample"
    first = server.get(f"{API}/runs/sample/results", params={"limit": 3})
    rest = server.get(f"{API}/runs/sample/results", params={"skip": 3, "limit": 3})
    assert first.headers["x-total-count"] == "4"
    results = first.json() + rest.json()
    assert [(r["item"], r["output"]["category"], r["expected"], r["correct"], r["prompt"]) for r in results] == [
        (0, "bug", "bug", True, "Message: The app crashes on login"),
        (1, "feature", "feature", True, "Message: Please add dark mode"),
        (2, "question", "question", True, "Message: How do I reset my password?"),
        (3, "bug", "bug", True, "Message: Export is broken"),
    ]
    assert server.get(f"{API}/runs/sample/results", params={"valid": "false"}).json() == []
    assert server.get(f"{API}/runs", params={"status": "failed"}).json() == []


def test_history_lists_without_plans_and_shows_one_with_it(sqlite_state: State, live: Any) -> None:
    sqlite_state.write(prompt="Classify the message, carefully.")
    sqlite_state.apply("--no-validate")
    server = live(sqlite_state.url)
    engine = open_engine(sqlite_state.url, create=False)
    listed = server.get(f"{API}/history").json()
    expected = [{k: v for k, v in r.items() if k != "plan"} for r in list_history(engine)]
    assert listed == json.loads(json.dumps(expected))
    entry = server.get(f"{API}/history/{listed[0]['id']}").json()
    assert entry["updated"] == 1
    assert [(c["action"], c["kind"], c["name"]) for c in entry["details"]["changes"]] == [("update", "Agent", "classifier")]


def test_drift_shows_a_change_made_outside_reconciler(sqlite_state: State, live: Any) -> None:
    from sqlalchemy import update

    from reconciler.state.tables import agent_configs

    server = live(sqlite_state.url)
    assert server.get(f"{API}/drift").json() == {"count": 0, "drift": []}
    engine = open_engine(sqlite_state.url, create=False)
    with engine.begin() as conn:
        conn.execute(update(agent_configs).where(agent_configs.c.name == "classifier").values(temperature=0.9))
    drift = server.get(f"{API}/drift").json()
    assert drift["count"] == 1
    assert drift["drift"][0]["name"] == "classifier"
    assert drift["drift"][0]["fields"] == [{"field": "temperature", "old": 0.0, "new": 0.9, "sensitive": False, "drift": True}]


def test_status_and_index(shared_state: State, live: Any) -> None:
    server = live(shared_state.url)
    status = server.get(f"{API}/status").json()
    assert status["database"] == "sqlite"
    assert status["resources"] == {"providers": 2, "agents": 3, "tasks": 2, "assignments": 2, "runs": 1, "experiments": 0}
    assert status["last_apply"]["id"] == 2  # the run's manifest was applied too
    index = server.get(API).json()
    assert index["endpoints"] == [e.url for e in ENDPOINTS]


def test_experiments_answer_501_without_the_experiment_kind(shared_state: State, live: Any, no_experiments: None) -> None:
    server = live(shared_state.url)
    for path in ("experiments", "experiments/ab"):
        response = server.get(f"{API}/{path}")
        assert response.status_code == 501
        assert response.json()["message"] == "experiments are not part of this reconciler build"


def test_a_server_started_before_the_database_exists_picks_it_up(tmp_path: Any, live: Any, stub: Any, secret_env: Any) -> None:
    url = f"sqlite:///{tmp_path / 'later.db'}"
    server = live(url)
    assert server.get(f"{API}/providers").json() == []
    assert server.get(f"{API}/status").json()["database"] is None
    assert server.get(f"{API}/agents/classifier").status_code == 404
    root = tmp_path / "m"
    root.mkdir()
    state = State(url, root, stub.base_url, secret_env)
    state.write()
    state.apply("--no-validate")
    import time

    time.sleep(1.1)  # the source retries opening at most once a second
    assert [p["name"] for p in server.get(f"{API}/providers").json()] == ["spare", "stub"]
    assert not (tmp_path / "later.db-journal").exists()


def test_the_server_cannot_write_even_if_a_handler_tried(shared_state: State) -> None:
    """Read-only below the API: the server's own engine refuses writes."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from reconciler.serve.source import StateSource

    engine = StateSource(shared_state.url).engine()
    assert engine is not None
    with pytest.raises(OperationalError, match="readonly"), engine.begin() as conn:
        conn.execute(text("UPDATE agent_configs SET temperature = 1.5"))


@pytest.mark.postgres
def test_the_server_cannot_write_on_postgresql_either(pg_url: str, tmp_path: Any, stub: Any, secret_env: Any) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import InternalError

    from reconciler.serve.source import StateSource

    root = tmp_path / "m"
    root.mkdir()
    State(pg_url, root, stub.base_url, secret_env).write()
    State(pg_url, root, stub.base_url, secret_env).apply("--no-validate")
    engine = StateSource(pg_url).engine()
    assert engine is not None
    with pytest.raises(InternalError, match="read-only transaction"), engine.begin() as conn:
        conn.execute(text("UPDATE agent_configs SET temperature = 1.5"))


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_no_endpoint_accepts_a_changing_method(shared_state: State, live: Any, method: str) -> None:
    server = live(shared_state.url)
    for e in ENDPOINTS:
        path = e.url.replace("{name}", "classifier" if "agents" in e.url else "1")
        response = httpx.request(method, server.url + path, timeout=30, content=b"{}")
        assert response.status_code == 405, (method, path, response.status_code)
        assert response.headers["allow"] == "GET, HEAD"
        assert "read-only" in response.json()["message"]


def test_head_is_allowed(shared_state: State, live: Any) -> None:
    response = httpx.head(live(shared_state.url).url + f"{API}/providers", timeout=30)
    assert response.status_code == 200 and response.content == b""


def test_openapi_documents_every_endpoint_the_server_answers(shared_state: State, live: Any) -> None:
    server = live(shared_state.url)
    doc = server.get(f"{API}/openapi.json").json()
    assert doc["openapi"] == "3.1.0"
    assert sorted(doc["paths"]) == sorted(e.url for e in ENDPOINTS)
    for path, item in doc["paths"].items():
        op = item["get"]
        assert set(item) == {"get"} and op["operationId"] and op["responses"]["200"]
        for p in op["parameters"]:
            if p["in"] == "path":
                assert "{" + p["name"] + "}" in path
    routes = {r.path for r in server.app.routes if getattr(r, "path", "").startswith(API)}
    assert routes == set(doc["paths"])


def test_every_documented_query_parameter_is_checked(shared_state: State, live: Any) -> None:
    """Each integer and boolean parameter refuses a wrong value with a 400 naming it."""
    server = live(shared_state.url)
    doc = server.get(f"{API}/openapi.json").json()
    checked = 0
    for path, item in doc["paths"].items():
        if "events" in path:
            continue
        concrete = path.replace("{name}", "sample" if "runs" in path else "classifier" if "agents" in path else "classify")
        for p in item["get"]["parameters"]:
            if p["in"] != "query" or p["schema"]["type"] == "string" and "enum" not in p["schema"]:
                continue
            response = server.get(concrete, params={p["name"]: "not-a-value"})
            assert response.status_code in (400, 404, 501), (path, p["name"], response.status_code)
            if response.status_code == 400:
                assert repr(p["name"]) in response.json()["message"]
                checked += 1
    assert checked >= 20
