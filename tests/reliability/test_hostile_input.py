"""Hostile and broken input: validate, plan and apply never crash or show a traceback; they exit 1
with a located message and stay within bounded memory (a child process under RLIMIT_AS)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.manifests.yamlfile import SAFE_COMPOSE_DEPTH, may_nest_deeply

from tests.reliability import fuzz
from tests.reliability.hostile import COMMANDS, corpus, probe_corpus

FUZZ_EXAMPLES = int(os.environ.get("RELIABILITY_FUZZ_EXAMPLES", "150"))
fuzz_settings = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
# inputs that are odd but legal: they must apply cleanly (and survive PostgreSQL's stricter types)
ACCEPTED = {"huge-string-15mb", "empty-documents", "odd-unicode", "bom-and-crlf"}
CORPUS = corpus()


@pytest.fixture(autouse=True)
def _secret_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUZZ_API_KEY", "sk-fuzz")


def test_hostile_corpus_is_refused_with_a_located_message(tmp_path: Path) -> None:
    results = probe_corpus(CORPUS, tmp_path, lambda name: f"sqlite:///{tmp_path / name}.db")
    assert list(results) == list(CORPUS) and all(len(o) == 3 for o in results.values()), "the child process died"
    for name, outcomes in results.items():
        for o in outcomes:
            assert not o.traceback and o.exit_code >= 0, (name, o.command, o.stderr)
            if name in ACCEPTED:
                assert o.exit_code == 0, (name, o.command, o.stderr)
            else:
                assert (o.exit_code, o.located) == (1, True), (name, o.command, o.stderr)
        if name not in ACCEPTED:
            assert not (tmp_path / f"{name}.db").exists(), f"{name}: a refused apply must not create the database"


@pytest.mark.postgres
def test_odd_but_legal_input_applies_to_postgres(tmp_path: Path, pg_server) -> None:
    databases = {name: f"hostile_{uuid.uuid4().hex[:12]}" for name in sorted(ACCEPTED)}
    urls = {name: pg_server.create_database(db) for name, db in databases.items()}
    try:
        results = probe_corpus({n: CORPUS[n] for n in sorted(ACCEPTED)}, tmp_path, urls.__getitem__)
    finally:
        for db in databases.values():
            pg_server.drop_database(db)
    for name, outcomes in results.items():
        assert [(o.command, o.exit_code) for o in outcomes] == [(c, 0) for c in COMMANDS], (name, outcomes[-1].stderr)


@fuzz_settings
@given(text=fuzz.random_yaml)
def test_random_yaml_never_escapes_the_error_contract(tmp_path: Path, text: str) -> None:
    manifests = fuzz.load_checked(tmp_path, text)
    if manifests is not None:
        fuzz.plan_is_storable(manifests)


@fuzz_settings
@given(text=fuzz.mutated_text())
def test_text_mutations_of_valid_manifests(tmp_path: Path, text: str) -> None:
    manifests = fuzz.load_checked(tmp_path, text)
    if manifests is not None:
        fuzz.plan_is_storable(manifests)


@fuzz_settings
@given(text=fuzz.mutated_documents())
def test_value_mutations_of_valid_manifests(tmp_path: Path, text: str) -> None:
    manifests = fuzz.load_checked(tmp_path, text)
    if manifests is not None:
        fuzz.plan_is_storable(manifests)


NESTERS = {
    "flow-seq": lambda d: "[" * d + "]" * d,
    "flow-map": lambda d: "{a: " * d + "1" + "}" * d,
    "flow-pairs": lambda d: "[a: " * d + "1" + "]" * d,
    "block-seq": lambda d: "- " * d + "x\n",
    "block-map": lambda d: "".join(" " * i + "k:\n" for i in range(d)) + " " * d + "v\n",
    "seq-of-maps": lambda d: "".join(" " * (2 * i) + "- k:\n" for i in range(d // 2)) + " " * d + "v\n",
}


@settings(max_examples=60, deadline=None, database=None)
@given(depth=st.integers(SAFE_COMPOSE_DEPTH + 1, 4 * SAFE_COMPOSE_DEPTH), style=st.sampled_from(sorted(NESTERS)), docs=st.integers(0, 3))
def test_the_cheap_depth_bound_never_misses_deep_nesting(depth: int, style: str, docs: int) -> None:
    """may_nest_deeply must flag every document libyaml would compose too deeply (or it could crash)."""
    text = "a: 1\n---\n" * docs + NESTERS[style](depth)
    assert may_nest_deeply(text)
