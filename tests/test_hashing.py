"""reconciler.hashing: one canonical JSON for every digest, byte-identical to the digests before it.

Before it, ``config_digest``, ``snapshot_sha256`` and ``inputs_digest`` each hashed
``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)``, and the state
fingerprint hashed orjson's bytes. The first three are stored (a run's config_sha256, a Run's
inputs_sha256) and compared later, so their values must not move: the literals below were computed
with those copies (main at 3364aa2). The fingerprint's old encoding disagreed with the others for a
few floats, NaN/infinities and integers beyond 64 bits; for every other value it is unchanged.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import hashlib
import json
import uuid
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.hashing import canonical_json, sha256_hex
from reconciler.llm.ports import AgentConfig, Example, ExecutionSettings, ProviderConfig, TaskConfig, config_digest
from reconciler.llm.registry import registry_key
from reconciler.runs.metrics import config_snapshot, snapshot_sha256
from reconciler.state.snapshot import ActualResource, fingerprint_of


def stdlib_json(value: Any) -> bytes:
    """The encoding the stored digests were computed over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def old_fingerprint_bytes(value: Any) -> bytes:
    """state/jsoncodec.canonical_bytes before: orjson, or spaced ASCII JSON for what orjson refused."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str)
    except TypeError:
        return json.dumps(value, sort_keys=True, default=str).encode()


PROVIDER = ProviderConfig("local", "openai", "http://127.0.0.1:8080/v1", api_key="sk-test")
AGENT = AgentConfig(
    "classifier", "gemma3-270m", "Classify — précisément.", 0.2, 256,
    {"input_per_mtok": 0.15, "output_per_mtok": 2e-05}, (Example("hi", {"label": "bug"}),),
)
TASK = TaskConfig("triage", {"type": "object", "properties": {"label": {"enum": ["bug", "feature"]}}, "minimum": 1e-07})
INPUTS = [
    {"text": "naïve ☃", "score": 1.5e-05, "n": None, "big": 2**70, "nan": float("nan"),
     "when": datetime.date(2024, 1, 2), "at": datetime.datetime(2024, 1, 2, 3, 4, 5)},
    {"text": "plain", "x": [1, 2.5, True]},
]


@pytest.mark.parametrize(
    ("digest", "expected"),
    [
        (lambda: config_digest(AGENT, TASK, PROVIDER.public(), ExecutionSettings()),
         "018aa458ac460fdfee6af8015ef6538f97d80b72850054fe3b4ed875ece14cc9"),
        (lambda: registry_key(AGENT, TASK, PROVIDER, ExecutionSettings()),
         ("classifier", "triage", "73291fd6743fdc40a9f05b6b2f00057deee4b1bd59d18b86160827e1d83ff4fc")),
        (lambda: snapshot_sha256(config_snapshot(PROVIDER, AGENT, TASK, {"sha256": "ab", "size": 2**40})),
         "d19ae14c74927c1a64a10d87f5735f68f9ef4d2aa0299fd71f23a9bd2a4d38d6"),
        # plan/desired.inputs_digest is "sha256:" + this
        (lambda: sha256_hex(INPUTS), "ef05b89669e0a527fe85c591b86a46f5fdfdd2aafb7898b3cffbf7c5576404c3"),
        (lambda: sha256_hex([{"text": "plain", "x": [1, 2.5, True], "y": None}]),
         "8cfb2a55cb84b8bd1612e2fd4b8ce28fd65e7bfad57421606d26727032acce3d"),
    ],
    ids=["config-digest", "registry-key", "run-config-sha256", "inputs-sha256-exotic", "inputs-sha256-plain"],
)
def test_stored_digests_did_not_move(digest: Any, expected: Any) -> None:
    assert digest() == expected


class Colour(str, enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


@dataclasses.dataclass
class Point:
    x: int


@pytest.mark.parametrize(
    "value",
    [
        1e-05, 1.5e-05, 9.99e-05, 1e-06, 1e-07, -3e-08, 1e-09, 1e-10, 1e-04, 1e16, 1.2345678901234567e300, 5e-324, -0.0,
        float("nan"), float("inf"), float("-inf"), [None, float("nan")], {"a": None, "b": float("inf")},
        2**63, 2**64, 2**70, -(2**70), {"1": 1, "é": 2, "a": 3, "\U0001f600": 4, "\ue000": 5},
        "\u2028\x00\x1f\x7f\"\\/", "e-5", {"t": "see 3e-5, 0.00001"},
        datetime.date(2024, 1, 2), datetime.datetime(2024, 1, 2, 3, 4, 5), uuid.UUID(int=7), Point(1),
        Colour.RED, Level.HIGH, ("a", None, 1), {"k": ("a", None)},
    ],
    ids=lambda v: repr(v)[:40],
)
def test_canonical_json_is_the_standard_librarys_encoding(value: Any) -> None:
    assert canonical_json(value) == stdlib_json(value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None, database=None)
@given(json_values)
def test_canonical_json_equals_the_standard_library_on_any_json(value: Any) -> None:
    try:
        expected = stdlib_json(value)
    except UnicodeEncodeError:  # a lone surrogate: the old copies failed on it, canonical_json does not
        assert canonical_json(value)
        return
    assert canonical_json(value) == expected


@pytest.mark.parametrize(
    "value",
    [{"b": [1, 2.5, None, True], "a": "é\n"}, {"p": 0.0001, "q": 1e-10, "r": 1e16, "s": 2**63}, [["Agent", "a"], "row", True]],
    ids=["plain", "floats-that-agree", "fingerprint-row"],
)
def test_fingerprint_bytes_unchanged_where_the_copies_agreed(value: Any) -> None:
    assert canonical_json(value) == old_fingerprint_bytes(value)


@pytest.mark.parametrize(
    "value", [1e-05, 1e-07, float("nan"), float("inf"), {"a": 1, "big": 2**70}], ids=["1e-05", "1e-07", "nan", "inf", "beyond-64-bits"]
)
def test_fingerprint_bytes_changed_where_the_copies_disagreed(value: Any) -> None:
    assert old_fingerprint_bytes(value) != canonical_json(value) == stdlib_json(value)


def _resources(essence: dict[str, Any]) -> dict[tuple[str, str], ActualResource]:
    row = ActualResource("Agent", "a", "0b1e2c3d-0000-4000-8000-000000000001", essence, True, dict(essence), {"team": "x"}, {})
    return {("Agent", "a"): row}


@pytest.mark.parametrize(
    ("essence", "expected"),
    [
        ({"temperature": 0.2, "prices": None, "system_prompt": "é\n", "max_tokens": 10},
         "6ec4509097f607808f2df98040240e7977ec3e294ecd1624da48298f0ac0f55f"),  # as before
        ({"temperature": 0.2, "prices": {"input_per_mtok": 1e-05}},
         "d99a7cb1a9b5d91b1d8c81935ae890511c90a9c5b204f4b8e48f13b8d614dd89"),  # was 690d29a1...: 0.00001, now 1e-05
    ],
    ids=["plain-unchanged", "small-float-changed"],
)
def test_state_fingerprint(essence: dict[str, Any], expected: str) -> None:
    assert fingerprint_of(_resources(essence)) == expected


def test_sha256_hex_hashes_canonical_json() -> None:
    value = {"b": 1, "a": [1.5e-05, None]}
    assert sha256_hex(value) == hashlib.sha256(b'{"a":[1.5e-05,null],"b":1}').hexdigest()


@pytest.mark.parametrize(
    "value",
    [{"b": [1, 2.5, None, True], "a": "é"}, [["Agent", "a"], "0b1e2c3d-1e15-4ef2-9e65-97b3090e0a12", True, {"x": None}], "e-mail, 3e-5x"],
    ids=["essence-with-null", "fingerprint-row-with-uuid", "text-with-e-dash"],
)
def test_plain_values_take_orjsons_path(value: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The state fingerprint encodes every row on every plan: the standard library is five times slower."""

    def refuse(value: Any) -> bytes:
        raise AssertionError("took the standard library's path")

    monkeypatch.setattr("reconciler.hashing._stdlib_json", refuse)
    assert canonical_json(value) == stdlib_json(value)
