"""The committed JSON Schemas are exactly what the models generate, and accept the sample manifests."""

from __future__ import annotations

import json

import pytest
import yaml
from jsonschema import Draft202012Validator

from reconciler.manifests.schemas import render_schemas
from tests.conftest import REPO


def test_committed_schemas_match_models() -> None:
    generated = render_schemas()
    committed = {p.name: p.read_text(encoding="utf-8") for p in (REPO / "schemas").glob("*.schema.json")}
    assert committed == generated, "run: python -m reconciler.manifests.schemas"


@pytest.mark.parametrize("path", sorted((REPO / "manifests").glob("*.yaml")), ids=lambda p: p.name)
def test_sample_manifests_satisfy_their_schema(path) -> None:
    schemas = {name: json.loads(text) for name, text in render_schemas().items()}
    for doc in yaml.safe_load_all(path.read_text()):
        validator = Draft202012Validator(schemas[f"{doc['kind'].lower()}.schema.json"])
        assert list(validator.iter_errors(doc)) == []


def test_schema_rejects_unknown_field_and_out_of_range() -> None:
    schema = json.loads(render_schemas()["agent.schema.json"])
    doc = {
        "apiVersion": "reconciler/v1",
        "kind": "Agent",
        "metadata": {"name": "a"},
        "spec": {"provider": "p", "model_name": "m", "temperature": 3, "colour": "red"},
    }
    messages = sorted(e.message for e in Draft202012Validator(schema).iter_errors(doc))
    assert any("3 is greater than the maximum of 2" in m for m in messages)
    assert any("'colour' was unexpected" in m for m in messages)


def _documents() -> list[tuple[str, dict]]:
    return [(p.name, doc) for p in sorted((REPO / "manifests").glob("*.yaml")) for doc in yaml.safe_load_all(p.read_text())]


def test_any_manifest_schema_checks_each_document_against_its_kind() -> None:
    """One schema per file (as editors apply it): every kind in a mixed file is checked as itself."""
    validator = Draft202012Validator(json.loads(render_schemas()["manifest.schema.json"]))
    kinds = set()
    for name, doc in _documents():
        assert list(validator.iter_errors(doc)) == [], name
        kinds.add(doc["kind"])
    assert {"Task", "Assignment"} <= kinds  # manifests/tasks.yaml holds both
    assignment = {"apiVersion": "reconciler/v1", "kind": "Assignment", "metadata": {"name": "a"}, "spec": {"agent": "x", "task": "y"}}
    assert list(validator.iter_errors(assignment)) == []
    as_task = {**assignment, "kind": "Task"}  # an Assignment's spec is not a valid Task spec
    assert any("response_schema" in e.message or "was unexpected" in e.message for e in validator.iter_errors(as_task))
    unknown = {**assignment, "kind": "Agnet"}
    assert any("is not one of" in e.message for e in validator.iter_errors(unknown))
