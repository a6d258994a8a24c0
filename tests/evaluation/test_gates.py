"""The gates and the behaviour diff as pure functions over values."""

from __future__ import annotations

import pytest

from reconciler.plan.behaviour import BehaviourDiff, Figures, GateVerdict, check_gates, state_after
from reconciler.plan.model import Action, Change, Plan


def figures(accuracy: float | None, valid: int = 20, items: int = 20) -> Figures:
    correct = round((accuracy or 0) * items)
    return Figures("a" * 64, items, valid, correct, accuracy, None, 100.0, 0.0, 0.0, 0)


@pytest.mark.parametrize(
    ("gate", "before", "after", "p", "expected"),
    [
        pytest.param({"min_accuracy": 0.55}, None, figures(0.55), None, [("min_accuracy", True, "accuracy 55% ≥ 55%")], id="floor-on-the-line"),
        pytest.param(
            {"min_accuracy": 0.55}, None, figures(0.4), None, [("min_accuracy", False, "accuracy 40% is 15 points below the floor 55%")], id="floor"
        ),
        pytest.param({"min_accuracy": 0.5}, None, figures(None, 0), None, [("min_accuracy", False, "no answer was scored")], id="nothing-scored"),
        pytest.param(
            {"max_drop": 0.05}, None, figures(0.3), None,
            [("max_drop", True, "a new assignment: no applied configuration to compare with")], id="new-assignment",
        ),
        pytest.param({"max_drop": 0.05}, figures(0.6), figures(0.7), 0.5, [("max_drop", True, "accuracy 60% → 70%: no fall")], id="rise"),
        pytest.param(
            {"max_drop": 0.05}, figures(0.6), figures(0.55), 1.0,
            [("max_drop", True, "accuracy 60% → 55%: fell 5 points, within the 5 points allowed")], id="drop-on-the-line",
        ),
        pytest.param(
            {"max_drop": 0.05}, figures(0.8), figures(0.5), 0.5,
            [("max_drop", False, "accuracy 80% → 50%: fell 30 points, 25 points more than the 5 points allowed")], id="drop",
        ),
        pytest.param(
            {"max_drop": 0.05, "significance": 0.05}, figures(0.8), figures(0.6), 0.2,
            [("max_drop", True, "accuracy 80% → 60%: fell 20 points, 15 points more than the 5 points allowed, "
              "but McNemar p = 0.200 ≥ 0.05: not told apart from noise")],
            id="drop-not-significant",
        ),
        pytest.param(
            {"max_drop": 0.05, "significance": 0.05}, figures(0.8), figures(0.3), 0.001,
            [("max_drop", False, "accuracy 80% → 30%: fell 50 points, 45 points more than the 5 points allowed (McNemar p = 0.001 < 0.05)")],
            id="drop-significant",
        ),
        pytest.param({"min_valid": 0.95}, None, figures(0.5, 19), None, [("min_valid", True, "valid answers 95% ≥ 95%")], id="valid"),
        pytest.param(
            {"min_valid": 0.95}, None, figures(0.5, 15), None, [("min_valid", False, "valid answers 75% is 20 points below the floor 95%")],
            id="too-few-valid",
        ),
        pytest.param(
            {"min_valid": 0.9, "max_drop": 0.1, "min_accuracy": 0.5}, figures(0.5), figures(0.5), 1.0,
            [
                ("min_accuracy", True, "accuracy 50% ≥ 50%"),
                ("max_drop", True, "accuracy 50% → 50%: no fall"),
                ("min_valid", True, "valid answers 100% ≥ 90%"),
            ],
            id="every-gate-in-order",
        ),
        pytest.param({}, figures(0.9), figures(0.1), 0.0, [], id="no-gates"),
    ],
)
def test_gates(gate: dict, before: Figures | None, after: Figures, p: float | None, expected: list[tuple[str, bool, str]]) -> None:
    assert check_gates(gate, before, after, p) == tuple(GateVerdict(*v) for v in expected)


def test_a_behaviour_diff_round_trips_through_json() -> None:
    d = BehaviourDiff("a", "t", figures(0.8), figures(0.5), -0.3, 0.01, gates=(GateVerdict("max_drop", False, "fell"),))
    assert BehaviourDiff.from_dict(d.to_dict()) == d and not d.passed
    plan = Plan((), "f", "now", evaluations=(d,), gates_ignored=True)
    assert Plan.from_dict(plan.to_dict()) == plan
    assert "evaluations" not in Plan((), "f", "now").to_dict()  # a plan made without --evaluate reads as before


NEW_TASK = {"response_schema": {"type": "string"}, "_inputs": [1]}


def test_the_state_after_a_plan_is_its_changes_over_the_snapshot() -> None:
    from reconciler.state.snapshot import ActualResource, StateSnapshot

    kept = ActualResource("Agent", "kept", "1", {"model_name": "m"}, True)
    gone = ActualResource("Agent", "gone", "2", {"model_name": "m"}, True)
    changed = ActualResource("Task", "t", "3", {"response_schema": {}}, True, row_name="Old Row Name")
    snapshot = StateSnapshot({r.key: r for r in (kept, gone, changed)}, "f")
    plan = Plan(
        (
            Change(Action.UPDATE, "Task", "t", desired=NEW_TASK, annotations={"reconciler/row-name": "New"}),
            Change(Action.DELETE, "Agent", "gone"),
        ),
        "f",
        "now",
    )
    state = state_after(snapshot, plan)
    assert sorted(state) == [("Agent", "kept"), ("Task", "t")]
    assert (state[("Task", "t")].essence, state[("Task", "t")].row_name) == ({"response_schema": {"type": "string"}}, "New")
    assert state[("Agent", "kept")].row_name == "kept"
