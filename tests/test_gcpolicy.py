"""gcpolicy.no_collection: the collector off for a plan's batch, what it built frozen after, and
collection on again as it was."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.gcpolicy import no_collection


@pytest.fixture(autouse=True)
def _collector_on() -> Iterator[None]:
    gc.enable()
    yield
    gc.unfreeze()  # what a test froze is this process's to collect again
    gc.enable()


def test_off_inside_then_frozen_and_on_again() -> None:
    frozen = gc.get_freeze_count()
    with no_collection():
        assert not gc.isenabled()
        built = [[i] for i in range(10_000)]  # lists: tracked by the collector (a dict of plain values is not)
    assert gc.isenabled() and gc.get_freeze_count() >= frozen + len(built)
    assert gc.get_count()[0] < 1_000  # turning it on again does not scan all that was built


def test_on_again_after_an_error() -> None:
    with pytest.raises(RuntimeError), no_collection():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_left_off_when_it_was_off() -> None:
    gc.disable()
    with no_collection():
        assert not gc.isenabled()
    assert not gc.isenabled()  # another batch, or the caller, turned it off: not ours to turn on


def test_a_plan_leaves_the_collector_on(cli_run: Callable[..., tuple[int, str, str]], tmp_path: Path, quick_start: Path) -> None:
    frozen = gc.get_freeze_count()
    code, out, err = cli_run("plan", str(quick_start), "--db", f"sqlite:///{tmp_path / 'state.db'}")
    assert code == 0 and "to create" in out, err
    assert gc.isenabled() and gc.get_freeze_count() > frozen
