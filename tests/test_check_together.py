"""The loader's reference and pair checks: a kind at a time with set operations when nothing is
wrong (``_pairs_if_no_problem``), else a manifest at a time, reporting each problem
(``_pairs_reporting_problems``). Both must give the same pairs, and the quick one must give up
exactly when the other reports something."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from reconciler.errors import ProblemList
from reconciler.kinds import BY_NAME
from reconciler.manifests import loader
from reconciler.manifests.loader import Manifest, load_manifests


def _both(manifests: list[Manifest], external_refs: bool = False) -> tuple[dict[Any, Manifest] | None, dict[Any, Manifest], list[str]]:
    names: dict[str, set[str]] = defaultdict(set)
    for m in manifests:
        names[m.kind].add(m.name)
    checks = {kind: loader._reference_checks(k, names) for kind, k in BY_NAME.items()}
    problems = ProblemList()
    reported: list[str] = []

    def ref(m: Manifest, field_name: str, target_kind: str) -> None:
        reported.append(f"{m.title} spec.{field_name} -> {target_kind}")

    quick = loader._pairs_if_no_problem(manifests, checks, external_refs)
    slow = loader._pairs_reporting_problems(manifests, checks, ref, problems, external_refs)
    return quick, slow, reported + [p.message for p in problems.items]


def _with(m: Manifest, **spec: Any) -> Manifest:
    return replace(m, spec=type(m.spec)({**vars(m.spec), **spec}))


def test_a_valid_set_gives_the_same_pairs_in_the_same_order(quick_start: Path) -> None:
    manifests = list(load_manifests([str(quick_start)], cache=None).manifests)
    quick, slow, reported = _both(manifests)
    assert reported == [] and quick is not None and list(quick.items()) == list(slow.items()) and slow


def _dangling_agent(manifests: list[Manifest]) -> list[Manifest]:
    i = next(i for i, m in enumerate(manifests) if m.kind == "Assignment")
    return [*manifests[:i], _with(manifests[i], agent="no-such-agent"), *manifests[i + 1 :]]


def _dangling_provider(manifests: list[Manifest]) -> list[Manifest]:
    i = next(i for i, m in enumerate(manifests) if m.kind == "Agent")
    return [*manifests[:i], _with(manifests[i], provider="no-such-provider"), *manifests[i + 1 :]]


def _twice_assigned(manifests: list[Manifest]) -> list[Manifest]:
    first = next(m for m in manifests if m.kind == "Assignment")
    return [*manifests, replace(first, name="the-same-pair-again")]


@pytest.mark.parametrize("break_it", [_dangling_agent, _dangling_provider, _twice_assigned], ids=["assignment-agent", "agent-provider", "pair-twice"])
def test_the_quick_check_gives_up_where_a_problem_is_reported(quick_start: Path, break_it: Any) -> None:
    manifests = break_it(list(load_manifests([str(quick_start)], cache=None).manifests))
    quick, _, reported = _both(manifests)
    assert quick is None and len(reported) == 1, reported


def test_references_only_the_database_has_are_no_problem_with_external_refs(quick_start: Path) -> None:
    manifests = _dangling_provider(list(load_manifests([str(quick_start)], cache=None).manifests))
    quick, slow, reported = _both(manifests, external_refs=True)
    assert reported == [] and quick is not None and list(quick.items()) == list(slow.items())
    assert _both(_twice_assigned(manifests), external_refs=True)[0] is None  # a pair twice is still wrong
