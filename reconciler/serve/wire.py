"""What goes over the wire: query parameters parsed strictly, errors as JSON, bodies without secrets.

Every bad query value is a 400 naming the parameter and what it accepts; nothing a client sends
reaches the database unchecked, so no input can turn into a 500.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

# Keys whose values are derived from a secret: an API key's HMAC, a ciphertext or its digest.
# Plans in the history hold ``api_key: {"ref": ..., "hmac": ...}``; the reference stays, the rest goes.
SECRET_DERIVED_KEYS = frozenset({"hmac", "digest", "secret_digest", "api_key_encrypted", "ciphertext", "secret_ciphertext"})
MAX_QUERY_VALUE = 1024  # no legitimate filter is longer; a longer one is refused before any work
MAX_INT = 2**62  # beyond every limit and id; keeps values inside a 64-bit column


class ParamType(enum.Enum):
    INT = "integer"
    BOOL = "boolean"
    STR = "string"


@dataclass(frozen=True)
class Param:
    """One query parameter: its type, range and meaning (also rendered into the OpenAPI document)."""

    name: str
    type: ParamType
    description: str
    default: Any = None
    minimum: int | None = None
    maximum: int | None = None
    choices: tuple[str, ...] = ()


class ApiError(Exception):
    """A client error: HTTP status and a message (and a hint) the client can act on."""

    def __init__(self, status: int, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.hint = hint


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def parse_query(query: Mapping[str, str], params: tuple[Param, ...]) -> dict[str, Any]:
    """Typed values for ``params`` (defaults where absent); ApiError(400) for a value out of its type or range."""
    values: dict[str, Any] = {}
    for p in params:
        raw = query.get(p.name)
        if raw is None or raw == "":
            values[p.name] = p.default
            continue
        if len(raw) > MAX_QUERY_VALUE:
            raise ApiError(400, f"query parameter {p.name!r} is {len(raw):,} characters long", f"at most {MAX_QUERY_VALUE}")
        values[p.name] = _convert(p, raw)
    return values


def _convert(p: Param, raw: str) -> Any:
    if p.type is ParamType.BOOL:
        word = raw.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        raise ApiError(400, f"query parameter {p.name!r} must be true or false, not {_shown(raw)}")
    if p.type is ParamType.INT:
        text = raw.strip()
        if not (text.isascii() and text.lstrip("-").isdigit()) or len(text) > 20:
            raise ApiError(400, f"query parameter {p.name!r} must be an integer, not {_shown(raw)}")
        number = int(text)
        low = p.minimum if p.minimum is not None else -MAX_INT
        high = p.maximum if p.maximum is not None else MAX_INT
        if not low <= number <= high:
            raise ApiError(400, f"query parameter {p.name!r} must be between {low} and {high}, not {number}")
        return number
    if p.choices and raw not in p.choices:
        raise ApiError(400, f"query parameter {p.name!r} must be one of {', '.join(p.choices)}, not {_shown(raw)}")
    if "\x00" in raw:
        raise ApiError(400, f"query parameter {p.name!r} holds a NUL character")
    return raw


def _shown(raw: str) -> str:
    return repr(raw if len(raw) <= 40 else raw[:37] + "...")


def redact(value: Any) -> Any:
    """``value`` without secret-derived entries, at any depth (a copy; the input is not changed)."""
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items() if k not in SECRET_DERIVED_KEYS}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return None  # no column the API shows is binary; a binary value can only be ciphertext
    return value


def dumps(value: Any) -> bytes:
    """The JSON bytes of a response body or event payload, always redacted."""
    return orjson.dumps(redact(value), default=str, option=orjson.OPT_NON_STR_KEYS)


def reason_of(exc: BaseException) -> str:
    """What went wrong, in one line: a ReconcilerError's message, else the exception's first line
    (a driver error's statement and parameters follow it and are no one's business)."""
    from reconciler.errors import ReconcilerError, first_line

    if isinstance(exc, ReconcilerError) and exc.problems:
        return exc.problems[0].message
    return first_line(exc)


def error_body(status: int, message: str, hint: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {"status": status, "error": _REASONS.get(status, "Error"), "message": message}
    if hint:
        body["hint"] = hint
    return body


_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    413: "Payload Too Large",
    414: "URI Too Long",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    503: "Service Unavailable",
}
