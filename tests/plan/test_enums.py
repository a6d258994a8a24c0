"""plan.enums on values: which values a plan's changes would write into enum columns that lack
them (the database's column types given as a DbColumns, no database)."""

from __future__ import annotations

import json

from reconciler.plan.enums import enum_shortfalls, refusal, written_values
from reconciler.plan.model import Action, Change, EnumShortfall, FieldChange, Plan
from reconciler.plan.render import render_json, render_text
from reconciler.kinds import BY_NAME
from reconciler.state.columns import NO_ENUMS, DbColumns, DbEnum
from tests.plan.values import plan_of

SEED = DbColumns({
    ("llm_providers", "type"): DbEnum("llm_providers", "type", "providertype", None, ("ollama", "openai")),
    ("llm_providers", "validation_status"): DbEnum("llm_providers", "validation_status", "validationstatus", None,
                                                   ("pending", "validating", "connected", "error")),
})
LOCAL = {"type": "llamacpp", "base_url": None, "is_active": True, "api_key": None, "model_path": None}
OLLAMA = {"type": "ollama", "base_url": "http://gpu:11434", "is_active": True, "api_key": None, "model_path": None}


def _create(name: str, essence: dict) -> Change:  # type: ignore[type-arg]
    return Change(Action.CREATE, "Provider", name, desired=essence)


def test_a_create_writes_its_columns_its_defaults_and_the_statuses_validation_writes_later() -> None:
    assert written_values(BY_NAME["Provider"], _create("gpu", OLLAMA)) == {
        "type": ("ollama",), "base_url": ("http://gpu:11434",), "is_active": (True,),
        "validation_status": ("pending", "pending", "validating", "connected", "error"),
    }
    unrelated = Change(Action.UPDATE, "Provider", "gpu", (FieldChange("is_active", True, False),), {**OLLAMA, "is_active": False}, "row-p")
    assert "validation_status" not in written_values(BY_NAME["Provider"], unrelated)


def test_values_the_enum_lacks_are_named_with_who_needs_them() -> None:
    changes = [_create("local", LOCAL), _create("gpu", OLLAMA), _create("edge", LOCAL), Change(Action.DELETE, "Provider", "old", row_id="r")]
    assert enum_shortfalls(changes, SEED) == (
        EnumShortfall("llm_providers", "type", "providertype", ("ollama", "openai"), ("llamacpp",), ("provider local", "provider edge")),
    )
    assert enum_shortfalls(changes[1:2], SEED) == ()
    assert enum_shortfalls(changes, NO_ENUMS) == ()  # SQLite, or reconciler's own schema: text columns


def test_a_schema_qualified_enum_and_a_status_the_enum_lacks() -> None:
    older = DbColumns({("llm_providers", "validation_status"): DbEnum("llm_providers", "validation_status", "status", "seed", ("pending", "connected", "error"))})
    (shortfall,) = enum_shortfalls([_create("gpu", OLLAMA)], older)
    assert (shortfall.enum, shortfall.missing) == ("seed.status", ("validating",))


def test_the_plan_shows_them_and_apply_refuses_with_the_same_words() -> None:
    shortfall = enum_shortfalls([_create("local", LOCAL)], SEED)
    plan = plan_of(_create("local", LOCAL), enum_shortfalls=shortfall)
    assert render_text(plan).endswith(
        "Warning: llm_providers.type is the PostgreSQL enum providertype ('ollama', 'openai'); provider local would write 'llamacpp', "
        "which it lacks. The service that owns this database cannot read a row with a value its enum lacks.\n"
        "  `reconciler apply` refuses this plan unless --extend-enums (ALTER TYPE providertype ADD VALUE 'llamacpp').\n"
    )
    assert Plan.from_dict(json.loads(render_json(plan))).enum_shortfalls == shortfall
    problems = refusal(shortfall).problems
    assert problems[0].message == shortfall[0].describe() and "--extend-enums" in problems[0].hint
    assert problems[-1].render() == "nothing was changed"
