"""The state's JSON codec falls back to the standard library for what orjson refuses."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from reconciler.state.jsoncodec import canonical_bytes, loads


@pytest.mark.parametrize(
    "value",
    [{"b": [1, 2.5, None, True], "a": "é"}, {"big": 10**30}, {"x": float("inf")}],
    ids=["plain", "big-int", "infinity"],
)
def test_loads_reads_what_json_dumps_writes(value: Any) -> None:
    assert loads(json.dumps(value)) == value


def test_loads_nan() -> None:
    assert math.isnan(loads('{"x": NaN}')["x"])


@pytest.mark.parametrize("value", [{"b": 1, "a": {"d": 2, "c": 3}}, {"big": 10**30, "a": 1}], ids=["plain", "big-int"])
def test_canonical_bytes_ignore_key_order(value: dict[str, Any]) -> None:
    reordered = dict(reversed(list(value.items())))
    assert canonical_bytes(value) == canonical_bytes(reordered)


@pytest.mark.parametrize(
    "value",
    [
        {"b": [1, 2.5, None, True], "a": "é", "t": (1, "x")},
        {"big": 10**30, "none": None},
        {"x": float("inf"), "y": None},
        [None, {"n": float("nan")}],
        {1: "int key"},
        {"tiny": 1e-7, "exp": 1e300, "neg": -0.0},
        "\ud800 lone surrogate",
    ],
    ids=["plain", "big-int", "infinity", "nan", "int-key", "floats", "surrogate"],
)
def test_dumps_reads_back_as_json_dumps_does(value: Any) -> None:
    """The JSON columns' writer: whatever orjson would write differently takes the standard library."""
    from reconciler.state.jsoncodec import dumps

    expected, got = json.loads(json.dumps(value)), json.loads(dumps(value))
    assert json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True)  # NaN != NaN: compare the text


def test_dumps_refuses_what_json_dumps_refuses() -> None:
    from datetime import UTC, datetime

    from reconciler.state.jsoncodec import dumps

    with pytest.raises(TypeError):
        dumps({"when": datetime(2024, 1, 1, tzinfo=UTC)})


class _LocalDict(dict):  # type: ignore[type-arg]
    """A dict subclass pickle cannot find by name once hidden below (orjson writes it as a dict)."""


@pytest.mark.parametrize(
    ("value", "quick"),
    [
        ({"a": None, "b": [1.5, {"c": float("nan")}]}, False),
        ({"a": None, "deep": [[[[-float("inf")]]]]}, False),
        ([None, float("inf")], False),
        ({"a": None, "b": 2.5, "text": "G\x7f\U000f0000 looks like a non-finite float to the pickle check"}, False),
        ({"a": None, "b": 0.1, "c": -0.0, "d": 1e308, "e": 5e-324}, True),
        ({"a": None, "nan-bits in text": "\x7f\xf8"}, True),
    ],
    ids=["nan", "minus-infinity", "infinity-in-list", "false-alarm", "finite-floats", "bits-in-text"],
)
def test_dumps_with_nulls_keeps_non_finite_floats_and_nothing_else(value: Any, quick: bool) -> None:
    """Text with a null: the quick pickle check lets finite values keep orjson's text, and whatever
    may hold a NaN or an infinity is read back and compared (NaN is written as the standard library does)."""
    from reconciler.state.jsoncodec import _all_floats_finite, dumps

    text = dumps(value)
    assert json.dumps(json.loads(text), sort_keys=True) == json.dumps(value, sort_keys=True)
    finite = all(math.isfinite(x) for x in _floats(value))
    assert _all_floats_finite(value) is quick
    assert ("NaN" in text or "Infinity" in text) is (not finite)


def test_dumps_of_what_pickle_cannot_write_takes_the_exact_check() -> None:
    from reconciler.state.jsoncodec import _all_floats_finite, dumps

    _LocalDict.__qualname__ = "nowhere.to.be.found"
    value = _LocalDict(a=None, b=float("nan"))
    assert _all_floats_finite(value) is False
    assert json.loads(dumps(value), parse_constant=str) == {"a": None, "b": "NaN"}


def _floats(value: Any) -> list[float]:
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        return [f for v in value.values() for f in _floats(v)]
    if isinstance(value, list):
        return [f for v in value for f in _floats(v)]
    return []


def test_dumps_many_writes_each_value_as_dumps_does() -> None:
    """A column at a time: the same texts as one ``dumps`` per value, whichever values hold nulls,
    non-finite floats, what orjson refuses (then every value its own way) or nothing special."""
    from datetime import UTC, datetime

    from reconciler.state.jsoncodec import dumps, dumps_many

    finite = [{"a": None, "b": 1.5}, {}, [None], "null", {"c": 2}]
    non_finite = [*finite, {"x": float("nan")}, {"y": [None, -float("inf")]}, {"t": "G\x7f\xf0"}]
    refused = [*non_finite, {"big": 2**70}, {1: "int key"}, "\ud800"]
    for values in (finite, non_finite, refused, [], [None]):
        assert dumps_many(values) == [dumps(v) for v in values], values
    with pytest.raises(TypeError):
        dumps_many([{"a": 1}, {"when": datetime(2024, 1, 1, tzinfo=UTC)}])
