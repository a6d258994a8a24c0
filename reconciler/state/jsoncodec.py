"""JSON for the state database: orjson where it can (several times faster than ``json``), the
standard library for what orjson refuses or changes (NaN, Infinity, integers beyond 64 bits)."""

from __future__ import annotations

import json
from typing import Any

import orjson  # a dependency (reconciler.hashing needs it too), not an optional speed-up

from reconciler.hashing import canonical_json as canonical_bytes

__all__ = ["canonical_bytes", "dumps", "loads"]  # canonical_bytes: kept for state.snapshot's fingerprint


# orjson reads integers beyond 64 bits as floats, silently; such a number has at least 19 digits.
# Looking for 19 digits in a row is done on bytes with every digit mapped to "1": four times faster
# than a regular expression, which cost more than orjson's parsing itself.
_DIGITS_AS_ONES = bytes(0x31 if 0x30 <= b <= 0x39 else 0x30 for b in range(256))
_LONG_NUMBER = b"1" * 19


def loads(text: str | bytes) -> Any:
    raw = text.encode() if isinstance(text, str) else text
    if _LONG_NUMBER not in raw.translate(_DIGITS_AS_ONES):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


# What orjson would write differently from ``json.dumps`` (dates, dataclasses) makes it raise, so
# those keep the standard library's behaviour (an error, or its own text).
_DUMPS_OPTIONS = (orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS) if orjson is not None else 0


def dumps(value: Any) -> str:
    """JSON text for the JSON columns: orjson (writing a first apply's 10,000 rows of bookkeeping with
    ``json`` took a tenth of it), the standard library for what orjson refuses or changes (integers
    beyond 64 bits, keys that are not text, NaN and infinities). Only spacing and escaping differ:
    the text reads back as the same value."""
    if orjson is not None:
        try:
            text = orjson.dumps(value, option=_DUMPS_OPTIONS)
        except TypeError:
            pass
        else:
            # a NaN or an infinity becomes null: then the text does not read back as the value
            if b"null" not in text or orjson.loads(text) == value:
                return text.decode()
    return json.dumps(value)
