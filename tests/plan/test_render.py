"""plan.render on a small Plan: the text, markdown and JSON renderings, whole."""

from __future__ import annotations

import json

import pytest

from reconciler.plan.model import Action, Change, FieldChange, Plan, UnmanagedResource
from reconciler.plan.render import RENDERERS, render_change, render_json, render_markdown, render_text
from tests.plan.values import plan_of

SCHEMA_OLD = {"type": "object", "properties": {"label": {"type": "string", "enum": ["bug", "feature"]}}}
SCHEMA_NEW = {"type": "object", "properties": {"label": {"type": "string", "enum": ["bug", "feature", "question"]}}}
CREATE = Change(Action.CREATE, "Provider", "openai", desired={"type": "openai"}, source="providers.yaml:1:1")
ONE_FIELD = Change(Action.UPDATE, "Agent", "triage", (FieldChange("temperature", 0.2, 0.7),), {"temperature": 0.7}, "row-a", reason="apply #3")
MANY_FIELDS = Change(
    Action.UPDATE, "Agent", "sorter",
    (
        FieldChange("temperature", 0.9, 0.2, drift=True),
        FieldChange("system_prompt", "Be brief.\nAnswer in English.", "Be brief.\nAnswer in French."),
        FieldChange("prices", None, {"input_per_mtok": 0.15}),
    ),
    {}, "row-s", reason="apply #3",
)
LONG_JSON = Change(Action.UPDATE, "Task", "classify", (FieldChange("response_schema", SCHEMA_OLD, SCHEMA_NEW),), {}, "row-t")
SENSITIVE = Change(Action.UPDATE, "Provider", "local", (FieldChange("api_key", "sk-old-123", "sk-new-456", sensitive=True, drift=True),), {}, "row-l")
DELETE = Change(Action.DELETE, "Task", "old", row_id="row-o", reason="no longer in the manifests")
PLAN = plan_of(
    CREATE, ONE_FIELD, MANY_FIELDS, LONG_JSON, SENSITIVE, DELETE,
    unmanaged=(UnmanagedResource("Agent", "seeded"),), warnings=("Targeted plan (--target/--exclude): 1 other change left out.",),
)

CHANGE_LINES = """\
+ provider openai
~ agent triage: temperature 0.2 → 0.7
~ agent sorter:
    temperature 0.9 → 0.2 (drift: changed outside reconciler since apply #3)
    system_prompt:
        --- old
        +++ new
        @@ -1,2 +1,2 @@
         Be brief.
        -Answer in English.
        +Answer in French.
    prices null → {"input_per_mtok": 0.15}
~ task classify:
    response_schema:
        --- old
        +++ new
        @@ -4,5 +4,6 @@
               "enum": [
                 "bug",
        -        "feature"
        +        "feature",
        +        "question"
               ],
               "type": "string"
~ provider local: api_key (sensitive value changed) (drift: changed outside reconciler)
- task old"""


def test_text() -> None:
    changes = "\n".join("  " + line for line in CHANGE_LINES.splitlines())
    assert render_text(PLAN) == (
        f"{changes}\n\nPlan: 1 to create, 4 to update, 1 to delete.\n"
        "Unmanaged (never touched): agent seeded\n"
        "Targeted plan (--target/--exclude): 1 other change left out.\n"
    )


def test_markdown() -> None:
    assert render_markdown(PLAN) == (
        "### reconciler plan\n\n**Plan: 1 to create, 4 to update, 1 to delete.**\n\n"
        f"```diff\n{CHANGE_LINES}\n```\n\nUnmanaged (never touched): agent seeded\n"
    )


def test_json_is_the_documented_document() -> None:
    plan = plan_of(SENSITIVE, DELETE, prune=False, sources=("manifests",), git={"commit": "abc", "dirty": False})
    assert json.loads(render_json(plan)) == {
        "format_version": 1,
        "created_at": "2024-05-06T07:08:09+00:00",
        "state_fingerprint": "f" * 64,
        "prune": False,
        "sources": ["manifests"],
        "git": {"commit": "abc", "dirty": False},
        "summary": {"create": 0, "update": 1, "delete": 1},
        "changes": [
            {"action": "update", "kind": "Provider", "name": "local", "source": None, "row_id": "row-l", "reason": "",
             "fields": [{"field": "api_key", "sensitive": True, "drift": True}], "desired": {}, "labels": {}, "annotations": {}},
            {"action": "delete", "kind": "Task", "name": "old", "source": None, "row_id": "row-o", "reason": "no longer in the manifests",
             "fields": [], "desired": None, "labels": {}, "annotations": {}},
        ],
        "unmanaged": [],
        "warnings": [],
        "enum_values_missing": [],
    }


def test_json_round_trips_to_the_same_plan() -> None:
    """What ``plan --out`` writes, ``apply FILE`` reads back (a sensitive field keeps no value)."""
    again = Plan.from_dict(json.loads(render_json(PLAN)))
    assert again.changes[:4] == PLAN.changes[:4] and again.changes[5:] == PLAN.changes[5:]
    assert again.changes[4] == Change(Action.UPDATE, "Provider", "local", (FieldChange("api_key", None, None, sensitive=True, drift=True),), {}, "row-l")
    assert (again.unmanaged, again.warnings, again.state_fingerprint) == (PLAN.unmanaged, PLAN.warnings, PLAN.state_fingerprint)


@pytest.mark.parametrize("fmt", sorted(RENDERERS))
def test_no_rendering_shows_a_sensitive_value(fmt: str) -> None:
    rendered = RENDERERS[fmt](PLAN)
    assert "sk-old" not in rendered and "sk-new" not in rendered


@pytest.mark.parametrize(
    ("plan", "text", "markdown"),
    [
        (plan_of(), "No changes. The database matches the manifests.\n", "### reconciler plan\n\nNo changes. The database matches the manifests.\n"),
        (
            plan_of(prune=False, unmanaged=tuple(UnmanagedResource("Task", f"t{i:02}") for i in range(12))),
            "No changes. The database matches the manifests.\n"
            "Prune is off (--no-prune): resources removed from the manifests are kept.\n"
            "Unmanaged (never touched): " + ", ".join(f"task t{i:02}" for i in range(10)) + " and 2 more\n",
            "### reconciler plan\n\nNo changes. The database matches the manifests.\n",
        ),
    ],
    ids=["empty", "empty-no-prune-many-unmanaged"],
)
def test_empty_plans(plan: Plan, text: str, markdown: str) -> None:
    assert (render_text(plan), render_markdown(plan)) == (text, markdown)


@pytest.mark.parametrize(
    ("change", "lines"),
    [
        (CREATE, ["+ provider openai"]),
        (DELETE, ["- task old"]),
        (ONE_FIELD, ["~ agent triage: temperature 0.2 → 0.7"]),
        (Change(Action.UPDATE, "Agent", "a", (FieldChange("description", "x" * 61, "y"),)),
         ["~ agent a:", "    description:", "        --- old", "        +++ new", "        @@ -1 +1 @@", "        -" + "x" * 61, "        +y"]),
        (Change(Action.UPDATE, "Agent", "a", (FieldChange("metadata.labels", {}, {"team": "ops"}),)),
         ['~ agent a: metadata.labels {} → {"team": "ops"}']),
        (Change(Action.UPDATE, "Agent", "a", (FieldChange("name", "a-old", "a", drift=True),), reason="apply #2"),
         ['~ agent a: name "a-old" → "a" (drift: changed outside reconciler since apply #2)']),
    ],
    ids=["create", "delete", "one-short-field", "long-text", "labels", "renamed"],
)
def test_render_change(change: Change, lines: list[str]) -> None:
    assert render_change(change) == lines
