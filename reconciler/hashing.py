"""Canonical JSON and its SHA-256: the one encoding behind every digest reconciler stores or compares
(a run's config_sha256, a Run's inputs_sha256, the agent registry's keys, the state fingerprint).

A leaf module (standard library and orjson only), so any layer may use it.
"""

from __future__ import annotations

import hashlib
import json
from enum import Enum
from typing import Any

import orjson

# Datetimes and dataclasses make orjson raise (no ``default`` given), so they take the standard
# library's path and hash as ``str()``, exactly as before; orjson's own ISO form would differ.
_ORJSON_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_NUMBER_END = frozenset(b",]}")


def _plain(value: Any) -> Any:
    # an Enum member hashes as its value whichever encoder runs (orjson has no other choice)
    return value.value if isinstance(value, Enum) else str(value)


def _stdlib_json(value: Any) -> bytes:
    # surrogatepass: a lone surrogate (only reachable through a \\ud800 escape) hashes instead of failing
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain)
    return text.encode("utf-8", "surrogatepass")


def _has_short_exponent(data: bytes) -> bool:
    """Whether orjson may have written a float the standard library writes differently.

    For 1e-10 <= |x| < 1e-4 the two disagree: orjson writes ``0.00001`` and ``1e-7`` where
    ``repr`` writes ``1e-05`` and ``1e-07``. A false alarm (such text inside a string) only costs
    the slower encoder.
    """
    if b"0.0000" in data:
        return True
    i = data.find(b"e-")
    while i != -1:
        digits_around = i > 0 and 0x30 <= data[i - 1] <= 0x39 and i + 2 < len(data) and 0x30 <= data[i + 2] <= 0x39
        if digits_around and (i + 3 == len(data) or data[i + 3] in _NUMBER_END):
            return True
        i = data.find(b"e-", i + 2)
    return False


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8, ``str()`` of anything JSON lacks: equal values, equal bytes.

    These are the bytes of ``json.dumps(value, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False, default=str)``, which the digests already in databases were computed over.
    orjson (five times faster, and the state fingerprint encodes every row on every plan) is used
    when it gives the very same bytes: not for floats it formats differently, and not when a
    ``null`` in its output may stand for NaN or an infinity (the standard library writes ``NaN``).
    Tuples read back as lists, so a value with tuples and a ``null`` takes the slower path.
    """
    try:
        fast = orjson.dumps(value, option=_ORJSON_OPTIONS)
    except TypeError:  # a type orjson leaves to ``default``, an integer beyond 64 bits, a non-str key
        return _stdlib_json(value)
    if _has_short_exponent(fast) or (b"null" in fast and orjson.loads(fast) != value):
        return _stdlib_json(value)
    return fast


def sha256_hex(value: Any) -> str:
    """The SHA-256 (hex) of ``canonical_json(value)``."""
    return hashlib.sha256(canonical_json(value)).hexdigest()
