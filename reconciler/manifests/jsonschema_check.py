"""Check that a task's response_schema is itself a valid JSON Schema (against its metaschema)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jsonschema import validators
from jsonschema.exceptions import relevance


@lru_cache(maxsize=None)
def _meta_validator(cls: type) -> Any:
    return cls(cls.META_SCHEMA)


def schema_errors(schema: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """(path inside the schema, message) for each metaschema violation, most relevant first."""
    cls = validators.validator_for(schema, default=validators.Draft202012Validator)
    errors = sorted(_meta_validator(cls).iter_errors(schema), key=relevance)
    return [(tuple(e.absolute_path), e.message) for e in errors[:5]]
