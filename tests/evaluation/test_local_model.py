"""`plan --evaluate` on the real embedded model: the quick start's classifier with its few-shot
examples removed, on a few labelled messages; evaluated again, every valid answer comes from the cache."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.llm, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]

LABELLED = [
    {"text": "The app crashes when I log in on iOS", "category": "bug"},
    {"text": "Please add an option to export reports as PDF", "category": "feature"},
    {"text": "How do I reset my password?", "category": "question"},
]


@pytest.fixture(autouse=True)
def _allow_requests(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    import pydantic_ai.models

    from reconciler.llm import registry
    from reconciler.llm.llamacpp_shared import stop_shared_servers

    monkeypatch.setattr(pydantic_ai.models, "ALLOW_MODEL_REQUESTS", True)
    monkeypatch.setattr(registry, "_default", None)
    yield
    stop_shared_servers()


def _quick_start(write_manifests, examples: bool) -> Path:  # type: ignore[no-untyped-def]
    agents = (REPO / "manifests" / "agents.yaml").read_text()
    if not examples:
        start = agents.index("  examples:\n")
        agents = agents[:start] + agents[agents.index("  temperature: 0.0", start) :]
    files = {name: (REPO / "manifests" / name).read_text() for name in ("providers.yaml", "tasks.yaml")}
    return write_manifests({**files, "agents.yaml": agents, "data/messages.jsonl": "".join(json.dumps(m) + "\n" for m in LABELLED)})


def test_removing_the_examples_is_evaluated_on_the_embedded_model(write_manifests, cli_run, sqlite_url: str) -> None:
    root = _quick_start(write_manifests, examples=True)
    assert cli_run("apply", str(root), "--db", sqlite_url, "--auto-approve", "--no-validate")[0] == 0
    _quick_start(write_manifests, examples=False)
    code, out, err = cli_run("plan", str(root), "--db", sqlite_url, "--evaluate", "--json")
    assert code in (0, 1), err  # whether a gate fails depends on what the small model answers
    (evaluation,) = json.loads(out)["evaluations"]
    assert evaluation["assignment"] == "message-classifier-classify-message"
    before, after = evaluation["before"], evaluation["after"]
    assert before["items"] == after["items"] == len(LABELLED) and before["config_sha256"] != after["config_sha256"]
    assert before["reused"] == after["reused"] == 0 and after["cost_per_1k_items_usd"] == 0
    assert [g["name"] for g in evaluation["gates"]] == ["min_accuracy", "max_drop", "min_valid"]
    assert (code == 1) == (not evaluation["passed"])
    assert "estimated cost $0.0000" in err

    code, out, _ = cli_run("plan", str(root), "--db", sqlite_url, "--evaluate", "--json")
    (again,) = json.loads(out)["evaluations"]
    assert again["before"]["reused"] == before["valid"] and again["after"]["reused"] == after["valid"]
    assert (again["before"]["accuracy"], again["after"]["accuracy"]) == (before["accuracy"], after["accuracy"]) or after["valid"] < len(LABELLED)
