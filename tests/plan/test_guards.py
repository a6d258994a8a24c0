"""Guard rails on values: --target/--exclude narrowing (with what kept changes need), prevent-destroy,
and the mass-delete threshold. Through plan/apply on real databases: tests/gitops/test_guards.py."""

from __future__ import annotations

import pytest

from reconciler.errors import Problem, ReconcilerError
from reconciler.plan.guards import (
    GuardOptions,
    Selector,
    check_mass_delete,
    check_prevent_destroy,
    guard_plan,
    parse_selector,
    select_changes,
)
from reconciler.plan.model import Action, Change
from tests.plan.values import actual, plan_of, snapshot

SNAPSHOT = snapshot(
    actual("Provider", "old", {"type": "openai"}),
    actual("Agent", "legacy", {"provider": "old"}),
    actual("Agent", "keep", {"provider": "p"}),
)
CREATE_P = Change(Action.CREATE, "Provider", "p", desired={"type": "openai"})
CREATE_A = Change(Action.CREATE, "Agent", "a", desired={"provider": "p"})
UPDATE_KEEP = Change(Action.UPDATE, "Agent", "keep", desired={"provider": "p"}, row_id="row-agent-keep")
DELETE_LEGACY = Change(Action.DELETE, "Agent", "legacy", row_id="row-agent-legacy")
DELETE_OLD = Change(Action.DELETE, "Provider", "old", row_id="row-provider-old")
FULL = plan_of(CREATE_P, CREATE_A, UPDATE_KEEP, DELETE_LEGACY, DELETE_OLD)
KNOWN = {c.key for c in FULL.changes} | set(SNAPSHOT.resources)
PROTECTED = {"reconciler/prevent-destroy": "true"}


def _left_out(n: int) -> str:
    return (
        f"Targeted plan (--target/--exclude): {n} other change{'s' if n != 1 else ''} left out; "
        "the database will not fully match the manifests."
    )


@pytest.mark.parametrize(
    ("text", "selector"),
    [
        ("agent/triage", Selector("agent/triage", "Agent", "triage")),
        ("Agents/triage-*", Selector("Agents/triage-*", "Agent", "triage-*")),
        ("assignment/a-b", Selector("assignment/a-b", "Assignment", "a-b")),
        ("*/legacy", Selector("*/legacy", "*", "legacy")),
        ("task/*", Selector("task/*", "Task", "*")),
    ],
    ids=["kind-and-name", "plural-any-case-glob", "assignment", "any-kind", "any-name"],
)
def test_parse_selector(text: str, selector: Selector) -> None:
    assert parse_selector(text) == selector


@pytest.mark.parametrize("text", ["agent", "agent/", "/x", "robot/x", "run/nightly"], ids=["no-slash", "no-name", "no-kind", "unknown-kind", "runs-not-selectable"])
def test_parse_selector_refuses(text: str) -> None:
    with pytest.raises(ReconcilerError) as exc:
        parse_selector(text, "--exclude")
    assert exc.value.problems == [
        Problem(
            f"--exclude {text!r} is not KIND/NAME",
            hint="e.g. agent/triage, provider/openai or task/* (kinds: provider, task, agent, assignment)",
        )
    ]


@pytest.mark.parametrize(
    ("targets", "excludes", "kept", "warnings"),
    [
        pytest.param(("agent/legacy",), (), [DELETE_LEGACY], [_left_out(4)], id="target-one"),
        pytest.param(("agent/keep",), (), [CREATE_P, UPDATE_KEEP], [_left_out(3)], id="update-pulls-in-the-provider-it-now-uses"),
        pytest.param(("agent/a",), (), [CREATE_P, CREATE_A], [_left_out(3)], id="create-pulls-in-its-provider"),
        pytest.param(("provider/old",), (), [DELETE_LEGACY, DELETE_OLD], [_left_out(3)], id="delete-pulls-in-its-referrers"),
        pytest.param(("agent/*",), (), [CREATE_P, CREATE_A, UPDATE_KEEP, DELETE_LEGACY], [_left_out(1)], id="glob"),
        pytest.param((), ("agent/keep",), [CREATE_P, CREATE_A, DELETE_LEGACY, DELETE_OLD], [_left_out(1)], id="exclude-one"),
        pytest.param(("Agents/keep", "*/a"), (), [CREATE_P, CREATE_A, UPDATE_KEEP], [_left_out(2)], id="kind-spelling-and-any-kind"),
        pytest.param(
            ("agent/a",), ("task/*",), [CREATE_P, CREATE_A],
            [_left_out(3), "--exclude 'task/*' matches nothing in the manifests or the database."],
            id="an-exclude-that-matches-nothing-is-noted",
        ),
    ],
)
def test_select_changes_keeps_targets_and_what_they_need(
    targets: tuple[str, ...], excludes: tuple[str, ...], kept: list[Change], warnings: list[str]
) -> None:
    narrowed = select_changes(FULL, SNAPSHOT, KNOWN, GuardOptions(targets, excludes))
    assert (narrowed.changes, narrowed.warnings) == (tuple(kept), tuple(warnings))
    assert (narrowed.state_fingerprint, narrowed.created_at) == (FULL.state_fingerprint, FULL.created_at)


@pytest.mark.parametrize(
    ("targets", "excludes", "problems"),
    [
        pytest.param(
            ("agent/legacyy",), (),
            [Problem("--target 'agent/legacyy' matches nothing in the manifests or the database",
                     hint="did you mean 'agent/legacy'? list resources with `reconciler get KIND`")],
            id="target-matches-nothing-with-a-suggestion",
        ),
        pytest.param(
            ("task/zzz",), (),
            [Problem("--target 'task/zzz' matches nothing in the manifests or the database", hint="list resources with `reconciler get KIND`")],
            id="target-matches-nothing",
        ),
        pytest.param(
            ("agent/a",), ("provider/p",),
            [Problem("Agent 'a' cannot change without Provider 'p', which --exclude leaves out",
                     hint="drop --exclude for provider/p, or also exclude agent/a")],
            id="exclude-breaks-a-create-dependency",
        ),
        pytest.param(
            ("provider/old",), ("agent/legacy",),
            [Problem("Provider 'old' cannot change without Agent 'legacy', which --exclude leaves out",
                     hint="drop --exclude for agent/legacy, or also exclude provider/old")],
            id="exclude-breaks-a-delete-dependency",
        ),
    ],
)
def test_select_changes_refuses_what_cannot_work(targets: tuple[str, ...], excludes: tuple[str, ...], problems: list[Problem]) -> None:
    with pytest.raises(ReconcilerError) as exc:
        select_changes(FULL, SNAPSHOT, KNOWN, GuardOptions(targets, excludes))
    assert exc.value.problems == problems


def test_no_selectors_returns_the_same_plan() -> None:
    assert select_changes(FULL, SNAPSHOT, KNOWN, GuardOptions()) is FULL


@pytest.mark.parametrize(
    ("change", "refused"),
    [
        (Change(Action.DELETE, "Agent", "legacy", annotations=PROTECTED), True),
        (Change(Action.DELETE, "Agent", "legacy", annotations={"reconciler/prevent-destroy": " True "}), True),
        (Change(Action.DELETE, "Agent", "legacy", annotations={"reconciler/prevent-destroy": "false"}), False),
        (Change(Action.DELETE, "Agent", "legacy"), False),
        (Change(Action.UPDATE, "Agent", "legacy", annotations=PROTECTED), False),
        (Change(Action.CREATE, "Agent", "legacy", annotations=PROTECTED), False),
    ],
    ids=["delete-protected", "any-case-and-blanks", "set-to-false", "not-annotated", "update-of-protected", "create-of-protected"],
)
def test_prevent_destroy(change: Change, refused: bool) -> None:
    expected = [
        Problem(
            "Agent 'legacy' is protected by the annotation reconciler/prevent-destroy: \"true\"; the plan would delete it",
            document='Agent "legacy"',
            hint="put its manifest back, or first apply it with the annotation removed (or set to \"false\"), then delete it",
        )
    ]
    assert check_prevent_destroy(plan_of(change)) == (expected if refused else [])


@pytest.mark.parametrize(
    ("deletes", "managed", "options", "refused"),
    [
        (1, 2, GuardOptions(), False),
        (2, 3, GuardOptions(), True),
        (1, 1, GuardOptions(), True),
        (3, 3, GuardOptions(allow_mass_delete=True), False),
        (0, 0, GuardOptions(), False),
        (2, 3, GuardOptions(mass_delete_share=0.8), False),
    ],
    ids=["half-is-fine", "two-of-three", "only-one", "allowed", "nothing", "a-higher-share"],
)
def test_mass_delete_threshold(deletes: int, managed: int, options: GuardOptions, refused: bool) -> None:
    plan = plan_of(*[Change(Action.DELETE, "Task", f"t{i}") for i in range(deletes)], Change(Action.CREATE, "Task", "new"))
    expected = [
        Problem(
            f"the plan would delete {deletes} of the {managed} resources reconciler manages (more than 50%); refusing",
            hint="check that PATH points at the whole manifests directory; if the deletes are intended, pass --allow-mass-delete",
        )
    ]
    assert check_mass_delete(plan, managed, options) == (expected if refused else [])


def test_guard_plan_reports_every_problem_at_once() -> None:
    plan = plan_of(Change(Action.DELETE, "Agent", "legacy", annotations=PROTECTED), DELETE_OLD)
    with pytest.raises(ReconcilerError) as exc:
        guard_plan(plan, SNAPSHOT, KNOWN, GuardOptions())
    assert [(p.message.split(";")[0], p.severity) for p in exc.value.problems] == [
        ("Agent 'legacy' is protected by the annotation reconciler/prevent-destroy: \"true\"", "error"),
        ("the plan would delete 2 of the 3 resources reconciler manages (more than 50%)", "error"),
        ("nothing was changed", "summary"),
    ]


def test_guard_plan_checks_the_narrowed_plan() -> None:
    """Deletes left out by --target count neither as protected nor towards the threshold."""
    plan = plan_of(Change(Action.DELETE, "Agent", "legacy", annotations=PROTECTED), DELETE_OLD, CREATE_P)
    narrowed = guard_plan(plan, SNAPSHOT, KNOWN, GuardOptions(targets=("provider/p",)))
    assert narrowed.changes == (CREATE_P,)
