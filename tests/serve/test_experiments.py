"""Experiments in the server: the adapter over the Experiment kind's report, and (when the kind is
part of the build) a real experiment through the API and the dashboard."""

from __future__ import annotations

import importlib.util
import textwrap
from typing import Any

import pytest

from reconciler.serve import dashboard, experiments
from reconciler.state.db import open_engine
from tests.serve.conftest import State

HAS_KIND = importlib.util.find_spec("reconciler.runs.experiment_views") is not None


def test_the_kind_is_discovered_exactly_when_it_is_installed() -> None:
    experiments.reset()
    found = experiments.backend()
    assert (found is not None) is HAS_KIND
    assert found is None or isinstance(found, experiments.KindBackend)


def test_arms_become_the_dashboards_variants() -> None:
    arms = [
        {"agent": "few-shot", "config_sha256": "a" * 64, "accuracy": 0.9, "valid": 20, "failed": 0,
         "latency_ms": {"mean": 12.0, "p50": 11.5, "p95": 20.0}, "cost_usd": 0.0012},
        {"agent": "zero-shot", "config_sha256": "b" * 64, "accuracy": 0.6, "valid": 18, "failed": 2,
         "latency_ms": {"mean": 9.0, "p50": 8.0, "p95": 15.0}, "cost_usd": 0.0008},
    ]
    view = experiments.comparison(arms)
    assert view["primary_metric"] == "accuracy"
    assert [(v["name"], v["metrics"]["accuracy"], v["metrics"]["latency_p50_ms"], v["metrics"]["cost_usd"]) for v in view["variants"]] == [
        ("few-shot", 0.9, 11.5, 0.0012), ("zero-shot", 0.6, 8.0, 0.0008),
    ]
    chart = dashboard.chart({"name": "x", "status": "completed", **view})
    assert [(b["name"], round(b["width"], 1)) for b in chart["bars"]] == [("few-shot", 100.0), ("zero-shot", 66.7)]
    unscored = experiments.comparison([{**a, "accuracy": None} for a in arms])
    assert unscored["primary_metric"] == "valid"


EXPERIMENT = """
apiVersion: reconciler/v1
kind: Agent
metadata: {name: terse}
spec: {provider: stub, model_name: gpt-4o-mini, system_prompt: Answer tersely., temperature: 0.0}
---
apiVersion: reconciler/v1
kind: Assignment
metadata: {name: terse-classify}
spec: {agent: terse, task: classify}
---
apiVersion: reconciler/v1
kind: Experiment
metadata: {name: shootout}
spec:
  task: classify
  agents: [classifier, terse]
  prompt_template: "Message: {text}"
  expected: category
  inputs:
    - {text: "The app crashes on login", category: bug}
    - {text: "Please add dark mode", category: feature}
    - {text: "How do I reset my password?", category: question}
"""


@pytest.mark.skipif(not HAS_KIND, reason="the Experiment kind is not part of this build")
def test_a_real_experiment_through_the_api_events_and_dashboard(sqlite_state: State, live: Any, events: Any) -> None:
    experiments.reset()
    server = live(sqlite_state.url)
    reader = events(server.url + "/api/v1/events")
    sqlite_state.write(extra="---\n" + textwrap.dedent(EXPERIMENT).lstrip("\n"))
    sqlite_state.apply("--no-validate")
    sqlite_state.cli("run", "shootout")
    reader.wait(lambda e: e["_event"] == "experiment" and e["name"] == "shootout" and e["status"] == "completed")
    assert [(r["name"], r["status"]) for r in server.get("/api/v1/experiments").json()] == [("shootout", "completed")]
    report = server.get("/api/v1/experiments/shootout").json()
    assert [a["agent"] for a in report["arms"]] == ["classifier", "terse"]
    assert [(v["name"], v["metrics"]["accuracy"]) for v in report["variants"]] == [("classifier", 1.0), ("terse", 1.0)]
    assert server.get("/api/v1/experiments/nope").status_code == 404
    html = dashboard.render_section("experiments", open_engine(sqlite_state.url, create=False), "db")
    assert 'data-experiment="shootout"' in html and 'data-bar="terse"' in html
