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
