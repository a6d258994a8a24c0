"""JSON for the state database: orjson where it can (several times faster than ``json``), the
standard library for what orjson refuses or changes (NaN, Infinity, integers beyond 64 bits)."""

from __future__ import annotations

import json
import re
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - optional speed-up
    orjson = None  # type: ignore[assignment]


# orjson reads integers beyond 64 bits as floats, silently; such a number has at least 19 digits
_LONG_DIGITS = re.compile(r"\d{19}")


def loads(text: str | bytes) -> Any:
    if orjson is not None and _LONG_DIGITS.search(text if isinstance(text, str) else text.decode()) is None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


def canonical_bytes(value: Any) -> bytes:
    """A stable encoding (sorted keys) for hashing; equal values always give equal bytes.

    NaN and infinities encode as null here; the state never holds them (PostgreSQL's json rejects them)."""
    if orjson is not None:
        try:
            return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str)
        except TypeError:
            pass
    return json.dumps(value, sort_keys=True, default=str).encode()
