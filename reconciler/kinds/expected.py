"""`expected`: where the right answers of a run or an experiment are. Plain functions (no pydantic),
so reports and runs use them without loading the manifest models."""

from __future__ import annotations

import difflib
from typing import Any


def expected_fields(expected: Any) -> tuple[str, str] | None:
    """(input field, output field) of an ``expected`` as stored: a plain string names both alike."""
    if expected is None:
        return None
    if isinstance(expected, str):
        return (expected, expected)
    return (str(expected["input"]), str(expected["output"]))


def expected_problem(expected: Any, schema: Any, task: str | None = None) -> tuple[str, str] | None:
    """(message, hint) when ``expected`` compares an output field the task's answers cannot have;
    accuracy would then be 0% on answers that are all right. None when it fits (or cannot be told)."""
    fields = expected_fields(expected)
    if fields is None or not isinstance(schema, dict):
        return None
    inp, out = fields
    whose = f"the response_schema of Task {task!r}" if task else "the task's response_schema"
    properties = schema.get("properties")
    if isinstance(properties, dict) and properties:
        if out in properties:
            return None
        names = sorted(properties)
        close = difflib.get_close_matches(out, names, n=1)
        listed = schema.get("required")
        required: list[Any] = listed if isinstance(listed, list) else []
        labels = [n for n in names if isinstance(properties[n], dict) and (properties[n].get("type") == "string" or "enum" in properties[n])]
        likely = [n for n in labels if n in required] or labels or names
        suggestion = close[0] if close else likely[0]
        if isinstance(expected, str):
            hint = f"name both fields: expected: {{input: {inp}, output: {suggestion}}} (the input field, then the answer's property)"
        else:
            hint = (f"did you mean {close[0]!r}? " if close else "") + "output names a property of the response_schema"
        return (f"expected output field {out!r} is not a property of {whose} (properties: {', '.join(names)})", hint)
    kind = schema.get("type")
    scalar = not schema or (isinstance(kind, str) and kind != "object")
    if scalar and not isinstance(expected, str):
        return (
            f"expected names output field {out!r}, but the answers of {whose} have no fields",
            f"compare the whole answer: expected: {inp}",
        )
    return None
