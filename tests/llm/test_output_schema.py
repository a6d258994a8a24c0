"""Response schemas people write: every output is checked with jsonschema before it is accepted."""

from __future__ import annotations

import pytest

from reconciler.llm.output_schema import OutputSchema

CLASSIFY = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["bug", "feature"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
    "required": ["category", "confidence"],
}
NESTED = {
    "type": "object",
    "properties": {
        "owner": {"type": "object", "properties": {"team": {"type": "string"}}, "required": ["team"]},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "due": {"anyOf": [{"type": "string"}, {"type": "null"}]},
    },
    "required": ["owner", "tags", "due"],
}
REFS = {
    "$defs": {"step": {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}, "required": ["n"]}},
    "type": "object",
    "properties": {"steps": {"type": "array", "items": {"$ref": "#/$defs/step"}}},
    "required": ["steps"],
}
DRAFT7 = {"$schema": "http://json-schema.org/draft-07/schema#", **CLASSIFY}


@pytest.mark.parametrize(
    ("schema", "value", "problem"),
    [
        pytest.param(CLASSIFY, {"category": "bug", "confidence": 0.5}, None, id="valid"),
        pytest.param(CLASSIFY, {"category": "nope", "confidence": 0.5}, "at /category: 'nope' is not one of", id="enum"),
        pytest.param(CLASSIFY, {"category": "bug"}, "'confidence' is a required property", id="required"),
        pytest.param(CLASSIFY, {"category": "bug", "confidence": 2}, "at /confidence: 2 is greater than the maximum of 1", id="maximum"),
        pytest.param(DRAFT7, {"category": "bug", "confidence": -1}, "less than the minimum", id="draft7-minimum"),
        pytest.param(NESTED, {"owner": {"team": "a"}, "tags": ["x"], "due": None}, None, id="nested-nullable"),
        pytest.param(NESTED, {"owner": {}, "tags": ["x"], "due": None}, "at /owner: 'team' is a required property", id="nested-required"),
        pytest.param(NESTED, {"owner": {"team": "a"}, "tags": [], "due": None}, "at /tags:", id="array-min-items"),
        pytest.param(NESTED, {"owner": {"team": "a"}, "tags": ["x"], "due": 3}, "at /due:", id="anyof"),
        pytest.param(REFS, {"steps": [{"n": 1}, {"n": 2}]}, None, id="ref-valid"),
        pytest.param(REFS, {"steps": [{"n": 0}]}, "at /steps/0/n: 0 is less than the minimum of 1", id="ref-invalid"),
    ],
)
def test_errors(schema: dict, value: object, problem: str | None) -> None:
    errors = OutputSchema(schema).errors(value)
    if problem is None:
        assert errors == []
    else:
        assert any(problem in e for e in errors), errors


@pytest.mark.parametrize(
    ("text", "value", "ok"),
    [
        pytest.param('{"category": "bug", "confidence": 1}', {"category": "bug", "confidence": 1}, True, id="plain"),
        pytest.param('```json\n{"category": "bug", "confidence": 1}\n```', {"category": "bug", "confidence": 1}, True, id="fenced"),
        pytest.param('{"category": "bug", "confidence": ', None, False, id="truncated"),
    ],
)
def test_parse_text(text: str, value: object, ok: bool) -> None:
    parsed, problems = OutputSchema(CLASSIFY).parse_text(text)
    assert parsed == value
    assert (problems == []) is ok
    if not ok:
        assert "not valid JSON" in problems[0]


def test_object_detection() -> None:
    assert OutputSchema(CLASSIFY).is_object
    assert not OutputSchema({"type": "string", "enum": ["a"]}).is_object


def _pure_python(schema: dict) -> OutputSchema:
    checked = OutputSchema(schema)
    object.__setattr__(checked, "_fast", None)  # as if jsonschema-rs were not installed
    return checked


AGREEMENT = [
    pytest.param(CLASSIFY, {"category": "bug", "confidence": 0.5}, id="valid"),
    pytest.param(CLASSIFY, {"category": "bug", "confidence": True}, id="bool-is-not-a-number"),
    pytest.param({"type": "integer"}, 1.0, id="integral-float-is-an-integer"),
    pytest.param({"enum": [1]}, True, id="enum-true-is-not-1"),
    pytest.param({"const": False}, 0, id="const-false-is-not-0"),
    pytest.param({"uniqueItems": True}, [1, True], id="unique-1-and-true"),
    pytest.param({"uniqueItems": True}, [1, 1.0], id="not-unique-1-and-1.0"),
    pytest.param({"type": "integer", "maximum": 10}, 2**70, id="big-integer"),
    pytest.param({"type": "number"}, float("nan"), id="nan"),
    pytest.param({"maxLength": 1}, "😀", id="length-in-code-points"),
    pytest.param({"type": "object"}, {1: "non-string key"}, id="non-string-key"),
    pytest.param({"multipleOf": 0.1}, 0.3, id="fractional-multiple-of"),
    pytest.param({"type": "string", "format": "email"}, "no-at-sign", id="format-email"),
    pytest.param({"type": "string", "format": "date"}, "2024-02-30", id="format-date"),
    pytest.param({"type": "string", "pattern": "^\\d+$"}, "١٢٣", id="pattern-unicode-digits"),
    pytest.param({"patternProperties": {"^x$": {"type": "integer"}}}, {"x": "1"}, id="pattern-properties"),
    pytest.param(REFS, {"steps": [{"n": 0}]}, id="ref"),
    pytest.param(NESTED, {"owner": {"team": "a"}, "tags": ["x"], "due": 3}, id="anyof"),
    pytest.param({"$ref": "https://example.invalid/schema.json"}, {}, id="remote-ref-not-fetched"),
]


@pytest.mark.parametrize(("schema", "value"), [p.values for p in AGREEMENT], ids=[p.id for p in AGREEMENT])
def test_fast_path_agrees_with_jsonschema(schema: dict, value: object) -> None:
    """jsonschema-rs only confirms valid outputs; it never accepts what jsonschema rejects."""
    try:
        expected = _pure_python(schema).errors(value)
    except Exception as exc:  # noqa: BLE001 - then the fast path must fail the same way
        with pytest.raises(type(exc)):
            OutputSchema(schema).errors(value)
        return
    assert OutputSchema(schema).errors(value) == expected


def test_fast_path_is_used_where_it_agrees() -> None:
    assert OutputSchema(CLASSIFY)._fast is not None and OutputSchema(REFS)._fast is not None
    assert OutputSchema({"type": "string", "format": "email"})._fast is None
    assert OutputSchema({"properties": {"n": {"multipleOf": 0.5}}})._fast is None
