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
