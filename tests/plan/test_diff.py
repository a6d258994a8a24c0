"""plan.diff.diff on values: desired resources and a snapshot in, a plan (or problems) out."""

from __future__ import annotations

from typing import Any

import pytest

from reconciler.errors import Problem, ReconcilerError
from reconciler.plan.diff import diff
from reconciler.plan.model import Action, Change, FieldChange, UnmanagedResource
from tests.plan.values import FINGERPRINT, actual, desired, desired_state, snapshot

PROVIDER = {"type": "openai", "base_url": "https://api.example.com/v1", "is_active": True, "api_key": None}
KEY_1 = {"ref": "env:OPENAI_API_KEY", "hmac": "hmac-1"}
KEY_2 = {"ref": "env:OPENAI_API_KEY", "hmac": "hmac-2"}
KEPT = {"reconciler/row-name": "Message Classifier"}
AGENT = {"provider": "openai", "model_name": "gpt-4o-mini", "system_prompt": "Be brief.", "temperature": 0.2, "is_active": True}
TASK = {"description": "Sort messages", "response_schema": {"type": "object"}, "is_active": True}
PAIR = {"agent": "triage", "task": "classify", "is_active": True}
RUN = {"assignment": "triage-classify", "inputs_sha256": "sha256:1", "items": 2, "trigger": "manual"}


def agent(**changes: Any) -> dict[str, Any]:
    return {**AGENT, **changes}


def _create(kind: str, name: str, payload: dict[str, Any], **extra: Any) -> Change:
    return Change(Action.CREATE, kind, name, desired=payload, source=f"{kind.lower()}s.yaml:1:1", **extra)


def _update(kind: str, name: str, payload: dict[str, Any], *fields: FieldChange, **extra: Any) -> Change:
    return Change(
        Action.UPDATE, kind, name, fields, payload, f"row-{kind.lower()}-{name}", f"{kind.lower()}s.yaml:1:1", reason="apply #1", **extra
    )


def _delete(kind: str, name: str, **extra: Any) -> Change:
    return Change(Action.DELETE, kind, name, row_id=f"row-{kind.lower()}-{name}", reason="no longer in the manifests", **extra)


CASES = [
    pytest.param(
        [desired("Agent", "triage", AGENT, labels={"team": "support"})], [], {},
        [_create("Agent", "triage", AGENT, labels={"team": "support"})], [],
        id="create",
    ),
    pytest.param(
        [desired("Provider", "openai", {**PROVIDER, "api_key": KEY_1}, secret_source={"ref": {"from_env": "OPENAI_API_KEY"}}),
         desired("Run", "nightly", RUN, payload={"inputs": [{"text": "a"}, {"text": "b"}]})],
        [], {},
        [_create("Provider", "openai", {**PROVIDER, "api_key": KEY_1, "_secret_source": {"ref": {"from_env": "OPENAI_API_KEY"}}}),
         _create("Run", "nightly", {**RUN, "_inputs": [{"text": "a"}, {"text": "b"}]})],
        [],
        id="create-carries-secret-source-and-payload",
    ),
    pytest.param([desired("Agent", "triage", AGENT)], [actual("Agent", "triage", AGENT)], {}, [], [], id="no-change"),
    pytest.param(
        [desired("Agent", "triage", agent(temperature=0.7, system_prompt="Be very brief."))],
        [actual("Agent", "triage", AGENT)], {},
        [_update("Agent", "triage", agent(temperature=0.7, system_prompt="Be very brief."),
                 FieldChange("system_prompt", "Be brief.", "Be very brief."), FieldChange("temperature", 0.2, 0.7))],
        [],
        id="update-field-by-field",
    ),
    pytest.param(
        [desired("Agent", "triage", AGENT)],
        [actual("Agent", "triage", agent(temperature=0.9), applied=AGENT)], {},
        [_update("Agent", "triage", AGENT, FieldChange("temperature", 0.9, 0.2, drift=True))],
        [],
        id="drift-is-changed-back",
    ),
    pytest.param(
        [desired("Agent", "triage", agent(temperature=0.5))],
        [actual("Agent", "triage", agent(temperature=0.9), applied=AGENT)], {},
        [_update("Agent", "triage", agent(temperature=0.5), FieldChange("temperature", 0.9, 0.5, drift=True))],
        [],
        id="drift-and-a-new-value",
    ),
    pytest.param(
        [desired("Provider", "openai", {**PROVIDER, "api_key": KEY_2})],
        [actual("Provider", "openai", {**PROVIDER, "api_key": KEY_1})], {},
        [_update("Provider", "openai", {**PROVIDER, "api_key": KEY_2}, FieldChange("api_key", None, None, sensitive=True))],
        [],
        id="sensitive-change-hides-both-values",
    ),
    pytest.param(
        [desired("Provider", "openai", {**PROVIDER, "api_key": KEY_1})],
        [actual("Provider", "openai", {**PROVIDER, "api_key": KEY_2}, applied={**PROVIDER, "api_key": KEY_1})], {},
        [_update("Provider", "openai", {**PROVIDER, "api_key": KEY_1}, FieldChange("api_key", None, None, sensitive=True, drift=True))],
        [],
        id="sensitive-drift",
    ),
    pytest.param(
        [desired("Provider", "openai", {**PROVIDER, "api_key": KEY_1})],
        [actual("Provider", "openai", {**PROVIDER, "api_key": {"ref": "file:key.txt", "hmac": "hmac-1"}})], {},
        [], [],
        id="sensitive-equal-by-hmac-alone",
    ),
    pytest.param(
        [desired("Agent", "triage", AGENT, labels={"team": "sales"}, annotations={"owner": "ada"})],
        [actual("Agent", "triage", AGENT, labels={"team": "support"})], {},
        [_update("Agent", "triage", AGENT, FieldChange("metadata.labels", {"team": "support"}, {"team": "sales"}),
                 FieldChange("metadata.annotations", {}, {"owner": "ada"}), labels={"team": "sales"}, annotations={"owner": "ada"})],
        [],
        id="labels-and-annotations",
    ),
    pytest.param(
        [desired("Agent", "triage", AGENT)], [actual("Agent", "triage", AGENT, row_name="triage-old")], {},
        [_update("Agent", "triage", AGENT, FieldChange("name", "triage-old", "triage", drift=True))],
        [],
        id="renamed-outside-reconciler",
    ),
    pytest.param(
        [desired("Agent", "triage", AGENT, annotations=KEPT)],
        [actual("Agent", "triage", AGENT, annotations=KEPT, row_name="Message Classifier")], {},
        [], [],
        id="kept-row-name-is-no-change",
    ),
    pytest.param(
        [desired("Agent", "triage", AGENT)],
        [actual("Agent", "triage", AGENT, annotations=KEPT, row_name="Message Classifier")], {},
        [_update("Agent", "triage", AGENT, FieldChange("name", "Message Classifier", "triage"),
                 FieldChange("metadata.annotations", KEPT, {}))],
        [],
        id="annotation-removed-renames-the-row",
    ),
    pytest.param(
        [desired("Agent", "triage", AGENT, annotations=KEPT)],
        [actual("Agent", "triage", AGENT, annotations=KEPT, row_name="Classifier v2")], {},
        [_update("Agent", "triage", AGENT, FieldChange("name", "Classifier v2", "Message Classifier", drift=True), annotations=KEPT)],
        [],
        id="kept-row-name-renamed-outside-reconciler",
    ),
    pytest.param(
        [], [actual("Agent", "triage", AGENT, annotations={"owner": "ada"})], {},
        [_delete("Agent", "triage", annotations={"owner": "ada"})], [],
        id="delete-prune",
    ),
    pytest.param(
        [], [actual("Agent", "seeded", AGENT, managed=False), actual("Assignment", "x+y", PAIR, managed=False)], {},
        [], [UnmanagedResource("Agent", "seeded"), UnmanagedResource("Assignment", "x+y")],
        id="unmanaged-listed-never-deleted",
    ),
    pytest.param(
        [desired("Assignment", "triage-classify", PAIR)],
        [actual("Assignment", "triage-classify", PAIR), actual("Assignment", "triage+classify", PAIR, managed=False)], {},
        [], [],
        id="seed-row-of-a-managed-pair-not-listed",
    ),
    pytest.param(
        [], [actual("Run", "nightly", {**RUN, "started": True}), actual("Run", "seeded", RUN, managed=False)], {},
        [], [],
        id="runs-are-history",
    ),
    pytest.param(
        [desired("Run", "nightly", RUN)], [actual("Run", "nightly", {**RUN, "started": True})], {},
        [], [],
        id="started-run-unchanged",
    ),
    pytest.param(
        [], [], {("Agent", "gone"): 4},
        [Change(Action.DELETE, "Agent", "gone", reason="already deleted outside reconciler")], [],
        id="vanished-and-dropped-is-forgotten",
    ),
    pytest.param([desired("Agent", "gone", AGENT)], [], {("Agent", "gone"): 4}, [_create("Agent", "gone", AGENT)], [], id="vanished-but-desired-is-created"),
    pytest.param(
        [desired("Provider", "openai", PROVIDER), desired("Task", "classify", TASK), desired("Agent", "triage", AGENT),
         desired("Assignment", "triage-classify", PAIR), desired("Run", "nightly", RUN)],
        [actual("Provider", "old", PROVIDER), actual("Task", "old", TASK), actual("Agent", "old", agent(provider="old")),
         actual("Assignment", "old-old", {"agent": "old", "task": "old", "is_active": True})],
        {},
        [_create("Provider", "openai", PROVIDER), _create("Task", "classify", TASK), _create("Agent", "triage", AGENT),
         _delete("Assignment", "old-old"), _create("Assignment", "triage-classify", PAIR), _create("Run", "nightly", RUN),
         _delete("Agent", "old"), _delete("Task", "old"), _delete("Provider", "old")],
        [],
        id="dependency-order",
    ),
]


@pytest.mark.parametrize(("wanted", "rows", "vanished", "changes", "unmanaged"), CASES)
def test_diff(wanted: list[Any], rows: list[Any], vanished: dict[Any, Any], changes: list[Change], unmanaged: list[UnmanagedResource]) -> None:
    plan = diff(desired_state(*wanted), snapshot(*rows, vanished=vanished), sources=("manifests",), git={"commit": "abc"})
    assert (plan.changes, plan.unmanaged) == (tuple(changes), tuple(unmanaged))
    assert (plan.state_fingerprint, plan.prune, plan.sources, plan.git, plan.warnings) == (FINGERPRINT, True, ("manifests",), {"commit": "abc"}, ())


@pytest.mark.parametrize(
    ("rows", "vanished"),
    [([actual("Agent", "triage", AGENT)], {}), ([], {("Agent", "gone"): 4})],
    ids=["managed-row-kept", "vanished-row-remembered"],
)
def test_no_prune_deletes_nothing(rows: list[Any], vanished: dict[Any, Any]) -> None:
    plan = diff({}, snapshot(*rows, vanished=vanished), prune=False)
    assert (plan.changes, plan.prune) == ((), False)


def _problems(wanted: list[Any], rows: list[Any]) -> list[Problem]:
    with pytest.raises(ReconcilerError) as exc:
        diff(desired_state(*wanted), snapshot(*rows))
    return exc.value.problems


def _adopt_hint(kind: str, name: str) -> str:
    return f"adopt it with `reconciler adopt {kind.lower()}/{name}`, or rename the manifest (defined at {kind.lower()}s.yaml:1:1)"


@pytest.mark.parametrize(
    ("wanted", "rows", "problems"),
    [
        pytest.param(
            [desired("Task", "classify", TASK)], [actual("Task", "classify", TASK, managed=False)],
            [Problem("Task 'classify' already exists in the database but is not managed by reconciler", None, 'Task "classify"',
                     hint=_adopt_hint("Task", "classify"))],
            id="conflict-with-an-unmanaged-row",
        ),
        pytest.param(
            [desired("Agent", "triage", AGENT, annotations=KEPT)], [actual("Agent", "Message Classifier", AGENT, managed=False)],
            [Problem("its row would be named 'Message Classifier', the name of an existing agent that reconciler does not manage", None,
                     'Agent "triage"', hint=_adopt_hint("Agent", "triage"))],
            id="kept-row-name-of-an-unmanaged-row",
        ),
        pytest.param(
            [desired("Agent", "triage", AGENT, annotations=KEPT)],
            [actual("Agent", "sorter", AGENT, annotations=KEPT, row_name="Message Classifier")],
            [Problem("its row would be named 'Message Classifier', which Agent 'sorter' holds in the database", None, 'Agent "triage"',
                     hint="row names are unique per kind: change reconciler/row-name of one of the two (defined at agents.yaml:1:1)")],
            id="kept-row-name-held-by-a-row-being-deleted",
        ),
        pytest.param(
            [desired("Assignment", "triage-classify", PAIR)], [actual("Assignment", "triage+classify", PAIR, managed=False)],
            [Problem("Assignment 'triage+classify' (agent 'triage', task 'classify') already exists as a row reconciler does not manage", None,
                     'Assignment "triage-classify"', hint=_adopt_hint("Assignment", "triage-classify"))],
            id="conflict-with-an-unmanaged-pair",
        ),
        pytest.param(
            [], [actual("Provider", "openai", PROVIDER), actual("Agent", "seeded", AGENT, managed=False)],
            [Problem("cannot delete Provider 'openai': Agent 'seeded' still refers to it (a row reconciler does not manage)",
                     hint="keep Provider 'openai' in the manifests, or first remove or re-point Agent 'seeded'")],
            id="delete-blocked-by-an-unmanaged-referrer",
        ),
        pytest.param(
            [desired("Run", "nightly", {**RUN, "items": 3})], [actual("Run", "nightly", {**RUN, "started": True})],
            [Problem("run 'nightly' has already started, so its spec cannot change", None, 'Run "nightly"',
                     hint="a run is immutable once started: give the changed run a new name (e.g. nightly-2) at runs.yaml:1:1; "
                     "the started run and its results stay as they are")],
            id="started-run-is-immutable",
        ),
        pytest.param(
            [desired("Task", "classify", TASK), desired("Run", "nightly", {**RUN, "items": 3})],
            [actual("Task", "classify", TASK, managed=False), actual("Run", "nightly", {**RUN, "started": True})],
            [Problem("run 'nightly' has already started, so its spec cannot change", None, 'Run "nightly"',
                     hint="a run is immutable once started: give the changed run a new name (e.g. nightly-2) at runs.yaml:1:1; "
                     "the started run and its results stay as they are"),
             Problem("Task 'classify' already exists in the database but is not managed by reconciler", None, 'Task "classify"',
                     hint=_adopt_hint("Task", "classify"))],
            id="every-problem-at-once-in-key-order",
        ),
    ],
)
def test_diff_refuses(wanted: list[Any], rows: list[Any], problems: list[Problem]) -> None:
    assert _problems(wanted, rows) == problems


def test_a_pending_run_may_change() -> None:
    plan = diff(desired_state(desired("Run", "nightly", {**RUN, "items": 3})), snapshot(actual("Run", "nightly", {**RUN, "started": False})))
    assert plan.changes == (_update("Run", "nightly", {**RUN, "items": 3}, FieldChange("items", 2, 3)),)


def test_repointing_an_agent_and_deleting_its_old_provider_in_one_plan() -> None:
    """The agent's update runs before the provider's delete, so the delete is not blocked."""
    other = {**PROVIDER, "base_url": "https://other.example.com/v1"}
    plan = diff(
        desired_state(desired("Provider", "other", other), desired("Agent", "triage", agent(provider="other"))),
        snapshot(actual("Provider", "openai", PROVIDER), actual("Agent", "triage", AGENT)),
    )
    assert [(c.action, c.kind, c.name) for c in plan.changes] == [
        (Action.CREATE, "Provider", "other"), (Action.UPDATE, "Agent", "triage"), (Action.DELETE, "Provider", "openai"),
    ]


def test_a_kept_row_name_may_move_to_another_resource_in_one_plan() -> None:
    """``sorter`` gives its row name up (its annotation is gone) and ``triage`` is created with it."""
    plan = diff(
        desired_state(desired("Agent", "triage", AGENT, annotations=KEPT), desired("Agent", "sorter", AGENT)),
        snapshot(actual("Agent", "sorter", AGENT, annotations=KEPT, row_name="Message Classifier")),
    )
    assert [(c.action, c.name) for c in plan.changes] == [(Action.UPDATE, "sorter"), (Action.CREATE, "triage")]
    assert plan.changes[0].fields[0] == FieldChange("name", "Message Classifier", "sorter")


def _outcome(wanted: list[Any], rows: list[Any], vanished: dict[Any, Any]) -> Any:
    try:
        plan = diff(desired_state(*wanted), snapshot(*rows, vanished=vanished))
    except ReconcilerError as exc:
        return exc.problems
    return plan.changes, plan.unmanaged


SKIP_CASES = [pytest.param(*case.values[:3], id=case.id) for case in CASES] + [
    pytest.param(
        [desired("Agent", "triage", AGENT, annotations=KEPT), desired("Agent", "sorter", AGENT, annotations=KEPT)],
        [actual("Agent", "sorter", AGENT, annotations=KEPT, row_name="Message Classifier")], {},
        id="an-unchanged-row-keeps-the-name-another-wants",
    ),
    pytest.param(
        [desired("Provider", "openai", {**PROVIDER, "api_key": KEY_1})], [actual("Provider", "openai", {**PROVIDER, "api_key": KEY_1})], {},
        id="an-unchanged-secret",
    ),
]


@pytest.mark.parametrize(("wanted", "rows", "vanished"), SKIP_CASES)
def test_the_rows_skipped_at_a_glance_are_those_the_full_comparison_finds_unchanged(
    wanted: list[Any], rows: list[Any], vanished: dict[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``_maybe_changed`` leaves out unchanged managed rows; looking at every desired resource
    (as before it) gives the same plan or the same problems, with an unchanged row beside each case."""
    wanted, rows = [*wanted, desired("Task", "unchanged", TASK)], [*rows, actual("Task", "unchanged", TASK)]
    at_a_glance = _outcome(wanted, rows, vanished)
    monkeypatch.setattr("reconciler.plan.diff._maybe_changed", lambda desired, resources, kept_names: list(desired))
    assert _outcome(wanted, rows, vanished) == at_a_glance
