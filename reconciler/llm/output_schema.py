"""Checking model output against a task's response JSON Schema (the seed's planned SchemaGenerator).

Whatever mode produced the output (native JSON-schema mode, prompted mode, plain text), every output
passes through ``OutputSchema.errors`` before it is accepted; the messages are short enough to be fed
back to the model as retry feedback.

``jsonschema`` is the authority. A compiled jsonschema-rs validator answers the common case, a valid
output, in microseconds; only when it finds a problem (or cannot be trusted to agree, see
``_FAST_PATH_UNSAFE``) does the pure-Python validator run, to decide and to describe what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

MAX_ERRORS_REPORTED = 5

# Keywords where jsonschema-rs can call valid what jsonschema rejects: formats and patterns (other
# format checkers, ECMA regex vs Python's re) and a fractional multipleOf (0.3 is a multiple of 0.1
# for jsonschema-rs, not for Python floats). Schemas using them always take the pure-Python path.
_FAST_PATH_UNSAFE = frozenset({"format", "pattern", "patternProperties", "multipleOf"})


def _path(error: Any) -> str:
    return "/" + "/".join(str(p) for p in error.absolute_path) if error.absolute_path else "the top level"


def _keys(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from _keys(value)
    elif isinstance(node, list):
        for value in node:
            yield from _keys(value)


def _fast_validator(schema: dict[str, Any]) -> Any:
    """A compiled jsonschema-rs validator, or None when the schema needs the pure-Python path."""
    if not _FAST_PATH_UNSAFE.isdisjoint(_keys(schema)):
        return None
    try:
        import jsonschema_rs

        return jsonschema_rs.validator_for(schema, offline=True)  # offline: never fetch a remote $ref
    except Exception:  # noqa: BLE001 - not installed, or a schema it cannot compile: use jsonschema alone
        return None


@dataclass(frozen=True)
class OutputSchema:
    """A compiled response schema. Supports every keyword jsonschema does ($defs/$ref, anyOf, enums...)."""

    schema: dict[str, Any]
    _fast: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_fast", _fast_validator(self.schema))

    @cached_property
    def _validator(self) -> Any:
        from jsonschema.validators import Draft202012Validator, validator_for

        cls = validator_for(self.schema, default=Draft202012Validator)
        return cls(self.schema, format_checker=cls.FORMAT_CHECKER)

    @property
    def is_object(self) -> bool:
        """Structured-output modes need an object at the top level; anything else uses text mode."""
        return self.schema.get("type") == "object" or ("type" not in self.schema and "properties" in self.schema)

    def _confirmed_valid(self, value: Any) -> bool:
        if self._fast is None:
            return False
        try:
            return bool(self._fast.is_valid(value))
        except Exception:  # noqa: BLE001 - a value it cannot convert (non-string keys...): ask jsonschema
            return False

    def errors(self, value: Any) -> list[str]:
        """Human-readable problems with ``value`` (empty when it is valid)."""
        if self._confirmed_valid(value):
            return []
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
