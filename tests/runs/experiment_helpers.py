"""Experiment test fixtures: two agents of one task behind a stub OpenAI server, told apart by their
system prompts, and Experiment manifests applied next to them."""

from __future__ import annotations

import json
from typing import Any

from tests.runs.conftest import CLASSIFY_TASK, keyword_classifier

GOOD, BAD = "Classify carefully.", "Say bug."

TWO_AGENTS = """
apiVersion: reconciler/v1
kind: Provider
metadata: {name: stub}
spec: {type: openai, base_url: "BASE"}
---
apiVersion: reconciler/v1
kind: Agent
metadata: {name: classifier}
spec: {provider: stub, model_name: gpt-4o-mini, temperature: 0.0, system_prompt: "%s"}
---
apiVersion: reconciler/v1
kind: Agent
metadata: {name: lazy}
spec: {provider: stub, model_name: gpt-4o-mini, temperature: 0.0, system_prompt: "%s"}
---
apiVersion: reconciler/v1
kind: Assignment
metadata: {name: lazy-classify}
spec: {agent: lazy, task: classify}
""" % (GOOD, BAD) + CLASSIFY_TASK

ITEMS = [
    {"text": "The app crashes on login", "category": "bug"},
    {"text": "Please add dark mode", "category": "feature"},
    {"text": "How do I reset my password?", "category": "question"},
    {"text": "Export is broken", "category": "bug"},
    {"text": "Add a CSV import", "category": "feature"},
    {"text": "Where are my invoices?", "category": "question"},
]


def system_of(request: dict[str, Any]) -> str:
    return next((m["content"] for m in request["messages"] if m["role"] == "system"), "")


def prompt_of(request: dict[str, Any]) -> str:
    return [m["content"] for m in request["messages"] if m["role"] == "user"][-1]


def two_agents(request: dict[str, Any], n: int) -> dict[str, Any]:
    """The careful agent classifies by keywords; the lazy one always says bug."""
    if BAD in system_of(request):
        return {"category": "bug", "confidence": 50}
    return keyword_classifier(prompt_of(request))


def experiment_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "task": "classify", "agents": ["classifier", "lazy"], "baseline": "classifier",
        "prompt_template": "Message: {text}", "expected": "category", "repeats": 1, "concurrency": 2,
        "max_retries": 2, "timeout_seconds": 120.0, "trigger": "manual", "inputs": ITEMS,
    }
    spec.update(overrides)
    return {k: v for k, v in spec.items() if v is not None}


def experiment_manifest(name: str, spec: dict[str, Any]) -> str:
    """An Experiment manifest (JSON is YAML)."""
    return json.dumps({"apiVersion": "reconciler/v1", "kind": "Experiment", "metadata": {"name": name}, "spec": spec})


def add_experiment(write_manifests: Any, cli_run: Any, db: str, name: str, spec: dict[str, Any]) -> None:
    """Write the Experiment next to the configuration and apply them: the experiment is pending."""
    root = write_manifests({f"experiment-{name}.yaml": experiment_manifest(name, spec)})
    code, _, err = cli_run("apply", str(root), "--db", db, "--auto-approve")
    assert code == 0, err
