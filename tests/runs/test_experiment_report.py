"""The report as a pure function of stored answers: partial arms pair only what both finished,
no `expected` leaves only agreement, repeats give consistency and pass^k."""

from __future__ import annotations

import pytest

from reconciler.runs.experiment_report import ArmData, StoredAnswer, build_report, render_markdown, render_text

INPUTS = [{"text": f"m{i}", "label": label} for i, label in enumerate(["bug", "feature", "bug", "question"])]


def _arm(agent: str, answers: list[str | None], repeats: int = 1) -> ArmData:
    stored = [
        StoredAnswer(i, {"category": a} if a is not None else None, a is not None, 100.0 + i, False, None if a is not None else "invalid")
        for i, a in enumerate(answers)
    ]
    return ArmData(agent, "0" * 64, stored, 10 * len(stored), 5 * len(stored), 0.0)


def _report(arms: list[ArmData], expected: object = {"input": "label", "output": "category"}, repeats: int = 1) -> dict:
    return build_report(
        name="x", status="completed", task="t", baseline=arms[0].agent, arms=arms, inputs=INPUTS, expected=expected, repeats=repeats,
        prompt_template="Message: {text}",
    ).data


def test_a_partial_arm_is_compared_on_the_items_both_finished() -> None:
    base = _arm("base", ["bug", "feature", "bug", "question"])
    partial = _arm("new", ["bug", "bug"])  # items 0 and 1 only
    data = _report([base, partial])
    assert [(a["agent"], a["valid"], a["correct"], a["accuracy"]) for a in data["arms"]] == [("base", 4, 4, 1.0), ("new", 2, 1, 0.5)]
    (c,) = data["comparisons"]
    assert (c["both_right"], c["only_baseline_right"], c["only_agent_right"], c["both_wrong"]) == (1, 1, 0, 0)
    assert c["regressed"] == [1] and c["improved"] == [] and c["agreement"] == 0.5
    assert c["accuracy_diff"] == pytest.approx(-0.5)


def test_a_failed_answer_is_wrong_and_agrees_with_nothing() -> None:
    data = _report([_arm("base", [None, "feature", "bug", "question"]), _arm("new", [None, "feature", "bug", "bug"])])
    assert data["arms"][0]["failed"] == 1 and data["arms"][0]["accuracy"] == 0.75
    c = data["comparisons"][0]
    assert (c["both_wrong"], c["both_right"], c["regressed"]) == (1, 2, [3])
    assert c["agreement"] == 0.5  # items 1 and 2; item 0 failed in both


def test_without_expected_only_agreement_compares() -> None:
    data = _report([_arm("base", ["bug", "feature", "bug", "question"]), _arm("new", ["bug", "bug", "bug", "question"])], expected=None)
    assert [a["accuracy"] for a in data["arms"]] == [None, None] and data["arms"][0]["correct"] is None
    c = data["comparisons"][0]
    assert c["agreement"] == 0.75 and c["mcnemar_p"] is None and c["improved"] == [] and c["regressed"] == []


def test_repeats_score_every_answer_and_pair_items_by_majority() -> None:
    # 2 inputs (of the 4) answered 3 times each; stored index = input * 3 + repeat
    base = _arm("base", ["bug", "bug", "feature", "feature", "feature", "bug"] + [None] * 6, repeats=3)
    data = _report([base, base], repeats=3)
    arm = data["arms"][0]
    assert (arm["items"], arm["valid"], arm["failed"], arm["correct"]) == (12, 6, 6, 4)
    assert arm["consistency"] == pytest.approx((2 / 3 + 2 / 3 + 0 + 0) / 4)  # inputs 2 and 3: every repeat failed
    assert arm["pass_k"] == 0.0


def test_renderings_name_the_items_and_the_failures() -> None:
    report = build_report(
        name="x", status="partial", task="t", baseline="base",
        arms=[_arm("base", ["bug", "feature", "bug", "question"]), _arm("new", ["bug", None, "bug", "bug"])],
        inputs=INPUTS, expected={"input": "label", "output": "category"}, prompt_template="Message: {text}",
    )
    text = render_text(report)
    assert "failed answers of new (1):\n  #1 Message: m1 — invalid" in text
    assert "regressed (2):\n    #1 Message: m1 — expected feature: base feature, new (no answer)" in text
    markdown = render_markdown(report)
    assert markdown.startswith("### Experiment `x`: partial") and "<details><summary>Regressed: 2 items</summary>" in markdown
