"""Render a plan for people (text, markdown) and machines (JSON). Rendering never changes a plan."""

from __future__ import annotations

import json
from typing import Any

from reconciler.plan.model import Action, Change, FieldChange, Plan

SYMBOL = {Action.CREATE: "+", Action.UPDATE: "~", Action.DELETE: "-"}
_INLINE_LIMIT = 60
_UNMANAGED_SHOWN = 10


def _value(v: Any) -> str:
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if v is None:
        return "null"
    return json.dumps(v, ensure_ascii=False, sort_keys=True)


def _is_long(v: Any) -> bool:
    return (isinstance(v, str) and ("\n" in v or len(v) > _INLINE_LIMIT)) or (isinstance(v, (dict, list)) and len(_value(v)) > _INLINE_LIMIT)


def _long_lines(v: Any) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return v.splitlines()
    return json.dumps(v, indent=2, sort_keys=True, ensure_ascii=False).splitlines()


def _drift_note(f: FieldChange, change: Change) -> str:
    if not f.drift:
        return ""
    since = f" since {change.reason}" if change.reason.startswith("apply #") else ""
    return f" (drift: changed outside reconciler{since})"


def _field_lines(f: FieldChange, change: Change) -> list[str]:
    note = _drift_note(f, change)
    if f.sensitive:
        return [f"{f.field} (sensitive value changed){note}"]
    if _is_long(f.old) or _is_long(f.new):
        import difflib  # only for long texts; most plans have none, and every plan imports this module

        diff = difflib.unified_diff(_long_lines(f.old), _long_lines(f.new), "old", "new", lineterm="", n=2)
        return [f"{f.field}:{note}"] + ["    " + line for line in diff]
    return [f"{f.field} {_value(f.old)} → {_value(f.new)}{note}"]


def _title(c: Change) -> str:
    return f"{SYMBOL[c.action]} {c.kind.lower()} {c.name}"


def render_change(c: Change) -> list[str]:
    if c.action is not Action.UPDATE:
        return [_title(c)]
    lines = [line for f in c.fields for line in _field_lines(f, c)]
    if len(c.fields) == 1 and len(lines) == 1:
        return [f"{_title(c)}: {lines[0]}"]
    return [_title(c) + ":"] + ["    " + line for line in lines]


def summary_line(plan: Plan) -> str:
    s = plan.summary()
    return f"Plan: {s['create']} to create, {s['update']} to update, {s['delete']} to delete."


def _unmanaged_line(plan: Plan) -> list[str]:
    if not plan.unmanaged:
        return []
    shown = ", ".join(f"{u.kind.lower()} {u.name}" for u in plan.unmanaged[:_UNMANAGED_SHOWN])
    more = len(plan.unmanaged) - _UNMANAGED_SHOWN
    return [f"Unmanaged (never touched): {shown}" + (f" and {more} more" if more > 0 else "")]


def _enum_lines(plan: Plan) -> list[str]:
    """Values the database's enums lack: shown before anything is written, as apply refuses them."""
    out = []
    for e in plan.enum_shortfalls:
        adds = ", ".join(f"ALTER TYPE {e.enum} ADD VALUE {v!r}" for v in e.missing)
        out += [
            f"Warning: {e.describe()}",
            f"  `reconciler apply` refuses this plan unless --extend-enums ({adds}).",
        ]
    return out


def render_text(plan: Plan) -> str:
    lines: list[str] = []
    if plan.is_empty:
        lines.append("No changes. The database matches the manifests.")
    else:
        for change in plan.changes:
            lines += ["  " + line for line in render_change(change)]
        lines += ["", summary_line(plan)]
    if not plan.prune:
        lines.append("Prune is off (--no-prune): resources removed from the manifests are kept.")
    lines += _unmanaged_line(plan) + list(plan.warnings) + _enum_lines(plan)
    text = "\n".join(lines) + "\n"
    if plan.evaluations is not None:
        from reconciler.plan import behaviour

        text += "\n" + behaviour.render_text(plan.evaluations)
    return text


def render_json(plan: Plan) -> str:
    return json.dumps(plan.to_dict(), indent=2, ensure_ascii=False, default=str) + "\n"


def render_markdown(plan: Plan) -> str:
    """For pull-request comments: a summary, then the text plan in a diff block."""
    head = "### reconciler plan\n\n"
    if plan.is_empty:
        return head + "No changes. The database matches the manifests.\n"
    body = "\n".join(line for c in plan.changes for line in render_change(c))
    quoted = "\n".join(f"> **{line}**" if line.startswith("Warning") else f"> {line.strip()}" for line in _enum_lines(plan))
    extra = "\n\n".join(part for part in ("\n".join(_unmanaged_line(plan)), quoted) if part)
    text = head + f"**{summary_line(plan)}**\n\n```diff\n{body}\n```\n" + (f"\n{extra}\n" if extra else "")
    if plan.evaluations is not None:
        from reconciler.plan import behaviour

        text += "\n" + behaviour.render_markdown(plan.evaluations)
    return text


RENDERERS = {"text": render_text, "json": render_json, "markdown": render_markdown}
