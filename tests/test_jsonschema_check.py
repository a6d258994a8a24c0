"""The fast metaschema check (jsonschema-rs) never calls valid what jsonschema calls invalid."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.manifests.jsonschema_check import described_errors, schema_errors

D7 = "http://json-schema.org/draft-07/schema#"
CASES: dict[str, dict[str, Any]] = {
    "typical-valid": {"$schema": D7, "type": "object", "properties": {"c": {"type": "string", "enum": ["a", "b"]}}, "required": ["c"]},
    "no-schema-keyword": {"type": "object", "additionalProperties": False},
    "bad-type": {"type": "strng"},
    "nested-bad-minimum": {"type": "object", "properties": {"a": {"minimum": "x"}}},
    "required-not-list": {"$schema": D7, "required": "a"},
    "duplicate-required": {"required": ["a", "a"]},
    "negative-min-length": {"minLength": -1},
    "fractional-min-length": {"minLength": 1.5},
    "items-array-2020": {"items": [{"type": "string"}]},
    "items-array-draft7": {"$schema": D7, "items": [{"type": "string"}]},
    "additional-properties-string": {"additionalProperties": "no"},
    "multiple-of-zero": {"type": "integer", "multipleOf": 0},
    "draft-2019-bad": {"$schema": "https://json-schema.org/draft/2019-09/schema", "type": "x"},
    "draft-06-bad": {"$schema": "http://json-schema.org/draft-06/schema#", "type": "x"},
    "remote-ref-not-fetched": {"$ref": "https://example.invalid/schema.json"},
    "unknown-metaschema": {"$schema": "https://example.invalid/my-metaschema", "type": "object"},
    "nan": {"maximum": float("nan")},
}


@pytest.mark.parametrize("schema", list(CASES.values()), ids=list(CASES))
def test_fast_check_agrees_with_jsonschema(schema: dict[str, Any]) -> None:
    assert schema_errors(schema) == described_errors(schema)
