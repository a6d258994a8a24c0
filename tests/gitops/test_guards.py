"""Guard rails as pure functions over a plan, and through plan/apply on real databases."""

from __future__ import annotations

import pytest

from reconciler.errors import ReconcilerError
from reconciler.plan.guards import (
    GuardOptions,
    check_mass_delete,
    check_prevent_destroy,
    guard_plan,
    parse_selector,
    select_changes,
)
from reconciler.plan.model import Action, Change, Plan
from reconciler.state.snapshot import ActualResource, StateSnapshot
from tests.gitops.helpers import config


def _plan(*changes: Change) -> Plan:
    return Plan(changes=changes, state_fingerprint="x", created_at="now")


def _actual(kind: str, name: str, **essence: object) -> ActualResource:
    return ActualResource(kind, name, f"id-{name}", dict(essence), managed=True, applied=dict(essence))


SNAPSHOT = StateSnapshot(
    {
        ("Provider", "old"): _actual("Provider", "old", type="openai"),
        ("Agent", "legacy"): _actual("Agent", "legacy", provider="old"),
        ("Agent", "keep"): _actual("Agent", "keep", provider="p"),
    },
    "x",
)
CREATE_P = Change(Action.CREATE, "Provider", "p", desired={"type": "openai"})
CREATE_A = Change(Action.CREATE, "Agent", "a", desired={"provider": "p"})
UPDATE_KEEP = Change(Action.UPDATE, "Agent", "keep", desired={"provider": "p"}, row_id="id-keep")
DELETE_LEGACY = Change(Action.DELETE, "Agent", "legacy", row_id="id-legacy")
DELETE_OLD = Change(Action.DELETE, "Provider", "old", row_id="id-old")
FULL = _plan(CREATE_P, CREATE_A, UPDATE_KEEP, DELETE_LEGACY, DELETE_OLD)
KNOWN = {c.key for c in FULL.changes} | set(SNAPSHOT.resources)


@pytest.mark.parametrize(
    ("targets", "excludes", "kept"),
    [
        pytest.param(("agent/legacy",), (), ["Agent/legacy"], id="target-one"),
        pytest.param(("agent/keep",), (), ["Provider/p", "Agent/keep"], id="update-pulls-in-the-provider-it-now-uses"),
        pytest.param(("agent/a",), (), ["Provider/p", "Agent/a"], id="create-pulls-in-its-provider"),
        pytest.param(("provider/old",), (), ["Agent/legacy", "Provider/old"], id="delete-pulls-in-its-referrers"),
        pytest.param(("agent/*",), (), ["Provider/p", "Agent/a", "Agent/keep", "Agent/legacy"], id="glob"),
        pytest.param((), ("agent/keep",), ["Provider/p", "Agent/a", "Agent/legacy", "Provider/old"], id="exclude-one"),
        pytest.param(("Agents/keep", "*/a"), (), ["Provider/p", "Agent/a", "Agent/keep"], id="kind-spelling-and-any-kind"),
    ],
)
def test_select_changes_keeps_targets_and_what_they_need(targets: tuple[str, ...], excludes: tuple[str, ...], kept: list[str]) -> None:
    narrowed = select_changes(FULL, SNAPSHOT, KNOWN, GuardOptions(targets, excludes))
    assert [f"{c.kind}/{c.name}" for c in narrowed.changes] == kept
    assert narrowed.warnings and "left out" in narrowed.warnings[-1]


@pytest.mark.parametrize(
    ("targets", "excludes", "message"),
    [
        pytest.param(("agent/nope",), (), "--target 'agent/nope' matches nothing", id="target-matches-nothing"),
        pytest.param(("agent/a",), ("provider/p",), "cannot change without Provider 'p'", id="exclude-breaks-a-dependency"),
        pytest.param(("agent",), (), "is not KIND/NAME", id="no-slash"),
        pytest.param(("robot/x",), (), "is not KIND/NAME", id="unknown-kind"),
    ],
)
def test_select_changes_refuses_what_cannot_work(targets: tuple[str, ...], excludes: tuple[str, ...], message: str) -> None:
    with pytest.raises(ReconcilerError) as err:
        select_changes(FULL, SNAPSHOT, KNOWN, GuardOptions(targets, excludes))
    assert message in str(err.value)


def test_no_selectors_returns_the_same_plan() -> None:
    assert select_changes(FULL, SNAPSHOT, KNOWN, GuardOptions()) is FULL


def test_prevent_destroy_refuses_only_annotated_deletes() -> None:
    protected = Change(Action.DELETE, "Agent", "legacy", annotations={"reconciler/prevent-destroy": "true"})
    updated = Change(Action.UPDATE, "Agent", "keep", annotations={"reconciler/prevent-destroy": "true"})
    off = Change(Action.DELETE, "Agent", "other", annotations={"reconciler/prevent-destroy": "false"})
    problems = check_prevent_destroy(_plan(protected, updated, off))
    assert [p.document for p in problems] == ['Agent "legacy"']


@pytest.mark.parametrize(
    ("deletes", "managed", "allow", "refused"),
    [(1, 2, False, False), (2, 3, False, True), (1, 1, False, True), (3, 3, True, False), (0, 0, False, False)],
    ids=["half-is-fine", "two-of-three", "only-one", "allowed", "nothing"],
)
def test_mass_delete_threshold(deletes: int, managed: int, allow: bool, refused: bool) -> None:
    plan = _plan(*[Change(Action.DELETE, "Task", f"t{i}") for i in range(deletes)])
    assert bool(check_mass_delete(plan, managed, GuardOptions(allow_mass_delete=allow))) is refused


def test_guard_plan_reports_every_problem_at_once() -> None:
    plan = _plan(Change(Action.DELETE, "Agent", "legacy", annotations={"reconciler/prevent-destroy": "true"}), DELETE_OLD)
    with pytest.raises(ReconcilerError) as err:
        guard_plan(plan, SNAPSHOT, KNOWN, GuardOptions())
    text = str(err.value)
    assert "protected by the annotation reconciler/prevent-destroy" in text
    assert "would delete 2 of the 3 resources" in text
    assert "nothing was changed" in text


def test_parse_selector_accepts_kind_aliases() -> None:
    assert (parse_selector("Assignments/x-y").kind, parse_selector("*/x").kind) == ("Assignment", "*")


# --- through the CLI, on SQLite and PostgreSQL -------------------------------------------------


def test_prevent_destroy_and_mass_delete_through_apply(cli_run, write_manifests, db_url: str) -> None:
    three = {"a": 0.1, "b": 0.2, "c": 0.3}
    root = write_manifests(config(three, protected={"agent/a"}))
    assert cli_run("apply", str(root), "--db", db_url, "--auto-approve")[0] == 0

    write_manifests({"agents.yaml": "---".join(config({"b": 0.2, "c": 0.3})["agents.yaml"].split("---")), "assignments.yaml": config({"b": 0.2, "c": 0.3})["assignments.yaml"]})
    code, out, err = cli_run("apply", str(root), "--db", db_url, "--auto-approve")
    assert code == 1
    assert "Agent 'a' is protected by the annotation reconciler/prevent-destroy" in err
    assert "Traceback" not in err

    # a manifests directory that lost most files: refused, then allowed explicitly
    only_provider = write_manifests({"providers.yaml": config()["providers.yaml"]}, directory="partial")
    code, _, err = cli_run("plan", str(only_provider), "--db", db_url)
    assert code == 1 and "protected by the annotation" in err and "--allow-mass-delete" in err
    assert "would delete 7 of the 8 resources" in err
    keep_a = ("--exclude", "agent/a", "--exclude", "assignment/a-classify", "--exclude", "task/classify")
    code, out, err = cli_run("apply", str(only_provider), "--db", db_url, "--auto-approve", "--allow-mass-delete", *keep_a)
    assert code == 0, err
    assert "Apply complete (#2): 0 created, 0 updated, 4 deleted." in out
    assert cli_run("get", "agents", "a", "--db", db_url)[0] == 0


def test_target_applies_only_the_target(cli_run, write_manifests, db_url: str) -> None:
    root = write_manifests(config({"a": 0.1, "b": 0.2}))
    code, out, err = cli_run("apply", str(root), "--db", db_url, "--auto-approve", "--target", "agent/b")
    assert code == 0, err
    assert out.splitlines()[:3] == ["  + provider openai", "  + agent b", ""]
    code, out, _ = cli_run("plan", str(root), "--db", db_url, "--detailed-exitcode")
    assert code == 2 and "+ agent a" in out and "+ agent b" not in out
    code, _, err = cli_run("plan", str(root), "--db", db_url, "--target", "agent/zzz")
    assert (code, "matches nothing" in err) == (1, True)
    code, out, _ = cli_run("plan", str(root), "--db", db_url, "--exclude", "task/zzz", "--out", "saved.json")
    assert code == 0 and "--exclude 'task/zzz' matches nothing" in out
    code, _, err = cli_run("apply", "saved.json", "--db", db_url, "--target", "agent/a")
    assert code == 1 and "a saved plan is applied exactly as it was made" in err
