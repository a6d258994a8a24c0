"""JSON for the state database: orjson where it can (several times faster than ``json``), the
standard library for what orjson refuses or changes (NaN, Infinity, integers beyond 64 bits)."""

from __future__ import annotations

import io
import json
import pickle
import re
from collections.abc import Sequence
from typing import Any

import orjson  # a dependency (reconciler.hashing needs it too), not an optional speed-up

from reconciler.hashing import canonical_json as canonical_bytes

__all__ = ["canonical_bytes", "dumps", "dumps_many", "loads", "loads_all"]  # canonical_bytes: kept for state.snapshot's fingerprint


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


def loads_all(texts: Sequence[str]) -> list[Any]:
    """``loads`` of each text, as many as a column of 10,000 rows holds: one look for a long
    number over them all (joined by a newline, so no run of digits spans two) and orjson's own
    loop, not three calls per text; the texts one by one through ``loads`` when any may need the
    standard library."""
    if _LONG_NUMBER not in "\n".join(texts).encode().translate(_DIGITS_AS_ONES):
        try:
            return list(map(orjson.loads, texts))
        except orjson.JSONDecodeError:
            pass  # NaN or Infinity, which the standard library reads, or a text neither reads
    return [loads(text) for text in texts]


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
            if b"null" not in text or _all_floats_finite(value) or orjson.loads(text) == value:
                return text.decode()
    return json.dumps(value)


def dumps_many(values: list[Any]) -> list[str]:
    """``[dumps(v) for v in values]``, a column at a time: one orjson pass, and one exact check for
    NaN and infinities over every text that has a null (instead of one per value: the bookkeeping of
    10,000 resources had 4,000 such values, the check's set-up cost more than the pickling)."""
    dump, options = orjson.dumps, _DUMPS_OPTIONS
    try:
        texts = [dump(v, option=options).decode() for v in values]
    except TypeError:  # a value orjson refuses: each value its own way
        return [dumps(v) for v in values]
    nulls = [i for i, text in enumerate(texts) if "null" in text]
    if nulls and not _all_floats_finite([values[i] for i in nulls]):
        for i in nulls:
            texts[i] = dumps(values[i])
    return texts


# A non-finite double has all eleven exponent bits set: its big-endian bytes start 7f or ff, then f0-ff.
_NON_FINITE_BINFLOAT = re.compile(rb"G[\x7f\xff][\xf0-\xff]")


def _all_floats_finite(value: Any) -> bool:
    """True when ``value`` holds no NaN or infinity for sure; False when it may (then the caller reads
    the text back and compares, which is exact).

    Why pickle: reading a 6 MB plan back with orjson and comparing it took 0.05 s of a 10,000-resource
    apply (its history row has nulls), a walk in Python as long. The C pickler writes every float as
    BINFLOAT ('G' and its eight big-endian bytes), so no non-finite bit pattern after a 'G' means no
    non-finite float; the same bytes inside a string only send it to the exact check. Without its memo
    ("fast" mode) it takes a fifth of the read-back; that mode cannot pickle a value that contains
    itself, which orjson has already refused before this is asked."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.fast = True  # no memo: see above
    try:
        pickler.dump(value)
    except Exception:  # noqa: BLE001 - whatever pickle cannot write (a local class) goes to the exact check
        return False
    return _NON_FINITE_BINFLOAT.search(buffer.getbuffer()) is None
