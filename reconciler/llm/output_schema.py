"""Checking model output against a task's response JSON Schema (the seed's planned SchemaGenerator).

Whatever mode produced the output (native JSON-schema mode, prompted mode, plain text), every output
passes through ``OutputSchema.errors`` before it is accepted; the messages are short enough to be fed
back to the model as retry feedback.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

MAX_ERRORS_REPORTED = 5


def _path(error: Any) -> str:
    return "/" + "/".join(str(p) for p in error.absolute_path) if error.absolute_path else "the top level"


@dataclass(frozen=True)
class OutputSchema:
    """A compiled response schema. Supports every keyword jsonschema does ($defs/$ref, anyOf, enums...)."""

    schema: dict[str, Any]
    _validator: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from jsonschema.validators import Draft202012Validator, validator_for

        cls = validator_for(self.schema, default=Draft202012Validator)
        object.__setattr__(self, "_validator", cls(self.schema, format_checker=cls.FORMAT_CHECKER))

    @property
    def is_object(self) -> bool:
        """Structured-output modes need an object at the top level; anything else uses text mode."""
        return self.schema.get("type") == "object" or (
            "type" not in self.schema and "properties" in self.schema
        )

    def errors(self, value: Any) -> list[str]:
        """Human-readable problems with ``value`` (empty when it is valid)."""
        found = sorted(self._validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        out = [f"at {_path(e)}: {e.message}" for e in found[:MAX_ERRORS_REPORTED]]
        if len(found) > MAX_ERRORS_REPORTED:
            out.append(f"and {len(found) - MAX_ERRORS_REPORTED} more")
        return out

    def parse_text(self, text: str) -> tuple[Any, list[str]]:
        """(value, problems) for a text answer: the JSON in it, tolerating a Markdown fence."""
        stripped = text.strip()
        if stripped.startswith("```"):
            stripped = stripped.strip("`")
            stripped = stripped[4:] if stripped.lower().startswith("json") else stripped
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError as exc:
            return None, [f"the answer is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"]
        return value, self.errors(value)


def feedback(problems: list[str]) -> str:
    """The retry message sent back to the model."""
    return "Your answer does not match the required JSON Schema: " + "; ".join(problems) + ". Answer again with corrected JSON."
