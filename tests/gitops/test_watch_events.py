"""The closed sets in watch's events (trigger, outcome, run phase) and in problems (severity): every
member renders, and the JSON carries the member's text unchanged (scripts read these values)."""

from __future__ import annotations

import json
from typing import get_args

import pytest

from reconciler.errors import Location, Problem, Severity
from reconciler.gitops.watch import Outcome, ReconcileEvent, Trigger
from reconciler.gitops.watch_runs import RunEvent, RunPhase

TIME = "2024-05-06T07:08:09.123+00:00"


def test_the_sets_are_what_the_json_has_always_said() -> None:
    assert get_args(Trigger) == ("startup", "files", "interval", "retry", "self-heal", "takeover", "stop")
    assert get_args(Outcome) == ("applied", "in-sync", "drift", "invalid", "gated", "error", "deferred", "standby", "stopped")
    assert get_args(RunPhase) == ("started", "finished", "skipped", "not-started", "interrupted")
    assert get_args(Severity) == ("error", "warning", "summary")


@pytest.mark.parametrize("outcome", get_args(Outcome))
@pytest.mark.parametrize("trigger", get_args(Trigger))
def test_every_trigger_and_outcome_renders(trigger: Trigger, outcome: Outcome) -> None:
    event = ReconcileEvent(trigger, outcome, 12.0, time=TIME, apply_id=3, summary={"create": 1})
    line = json.loads(json.dumps(event.to_dict()))
    assert (line["trigger"], line["outcome"]) == (trigger, outcome)
    assert event.render_text().startswith(f"[07:08:09] {trigger}: ")


@pytest.mark.parametrize(
    ("outcome", "text"),
    [
        ("applied", "[07:08:09] files: applied #3: 1 created (12 ms)"),
        ("in-sync", "[07:08:09] files: in sync (12 ms)"),
        ("invalid", "[07:08:09] files: manifests are invalid; applied nothing; waiting for them to change (12 ms)"),
        ("gated", "[07:08:09] files: an evaluated change failed a gate; applied nothing; waiting for the manifests to change (12 ms)"),
        ("error", "[07:08:09] files: apply failed; applied nothing; waiting for the next change (12 ms)"),
        ("deferred", "[07:08:09] files: a git operation is in progress; reconciling when it ends (12 ms)"),
        ("stopped", "[07:08:09] files: stopped (12 ms)"),
    ],
    ids=["applied", "in-sync", "invalid", "gated", "error", "deferred", "stopped"],
)
def test_outcome_texts(outcome: Outcome, text: str) -> None:
    assert ReconcileEvent("files", outcome, 12.0, time=TIME, apply_id=3, summary={"create": 1}).render_text() == text


@pytest.mark.parametrize("phase", get_args(RunPhase))
def test_every_run_phase_is_in_the_json(phase: RunPhase) -> None:
    event = RunEvent("nightly", phase, "running", 4, "something happened", time=TIME)
    assert json.loads(json.dumps(event.to_dict()))["phase"] == phase
    assert event.render_text() == "[07:08:09] run nightly (apply #4): something happened"


@pytest.mark.parametrize(
    ("severity", "rendered"),
    [
        ("error", 'm.yaml:2:3: error: Agent "a" spec.x: bad\n  hint: fix it'),
        ("warning", 'm.yaml:2:3: warning: Agent "a" spec.x: bad\n  hint: fix it'),
        ("summary", "bad"),  # the closing line after a list of errors: just its message
    ],
    ids=["error", "warning", "summary"],
)
def test_every_severity_renders(severity: Severity, rendered: str) -> None:
    problem = Problem("bad", Location("m.yaml", 2, 3), 'Agent "a"', "spec.x", "fix it", severity)
    assert problem.render() == rendered
    assert problem.to_dict()["severity"] == severity
