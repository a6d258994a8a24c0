"""Read-only listings for `reconciler get` and `reconciler history` (plain dicts, ready to render)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from reconciler.state.tables import (
    agent_configs,
    agent_task_assignments,
    llm_providers,
    reconciler_applies,
    reconciler_resources,
    task_configs,
)

RESOURCE_KINDS = {"providers": "Provider", "agents": "Agent", "tasks": "Task", "assignments": "Assignment"}


def _iso(v: Any) -> Any:
    return v.isoformat(timespec="seconds") if hasattr(v, "isoformat") else v


def _managed(conn: Any, kind: str) -> dict[str, str]:
    t = reconciler_resources
    return {str(r.row_id): r.name for r in conn.execute(select(t.c.row_id, t.c.name).where(t.c.kind == kind))}


def list_resources(engine: Engine | None, what: str, name: str | None = None) -> list[dict[str, Any]]:
    if engine is None:
        return []
    kind = RESOURCE_KINDS[what]
    with engine.connect() as conn:
        managed = _managed(conn, kind)
        if kind == "Provider":
            p = llm_providers.c
            rows = [
                {
                    "name": r.name,
                    "type": r.type,
                    "base_url": r.base_url,
                    "api_key": "(set, encrypted)" if r.api_key_encrypted else None,
                    "is_active": r.is_active,
                    "validation_status": r.validation_status,
                    "validation_error": r.validation_error,
                    "validated_at": _iso(r.validated_at),
                    "managed": str(r.id) in managed,
                    "id": str(r.id),
                }
                for r in conn.execute(select(llm_providers).order_by(p.name))
            ]
        elif kind == "Agent":
            a, p = agent_configs, llm_providers
            rows = [
                {
                    "name": r.name,
                    "provider": r.provider,
                    "model_name": r.model_name,
                    "temperature": r.temperature,
                    "max_tokens": r.max_tokens,
                    "is_active": r.is_active,
                    "description": r.description,
                    "system_prompt": r.system_prompt,
                    "managed": str(r.id) in managed,
                    "id": str(r.id),
                }
                for r in conn.execute(
                    select(a, p.c.name.label("provider")).join(p, p.c.id == a.c.provider_id).order_by(a.c.name)
                )
            ]
        elif kind == "Task":
            t = task_configs
            rows = [
                {
                    "name": r.name,
                    "description": r.description,
                    "is_active": r.is_active,
                    "response_schema": r.response_schema,
                    "managed": str(r.id) in managed,
                    "id": str(r.id),
                }
                for r in conn.execute(select(t).order_by(t.c.name))
            ]
        else:
            s, a, t, p = agent_task_assignments, agent_configs, task_configs, llm_providers
            query = (
                select(
                    s.c.id, s.c.is_active, s.c.assigned_at,
                    a.c.name.label("agent_name"), t.c.name.label("task_name"),
                    p.c.name.label("provider_name"), p.c.type.label("provider_type"),
                )
                .join(a, a.c.id == s.c.agent_id)
                .join(t, t.c.id == s.c.task_id)
                .join(p, p.c.id == a.c.provider_id)
                .order_by(a.c.name, t.c.name)
            )
            rows = [
                {
                    "name": managed.get(str(r.id), f"{r.agent_name}+{r.task_name}"),
                    "agent_name": r.agent_name,
                    "task_name": r.task_name,
                    "provider_name": r.provider_name,
                    "provider_type": r.provider_type,
                    "is_active": r.is_active,
                    "assigned_at": _iso(r.assigned_at),
                    "managed": str(r.id) in managed,
                    "id": str(r.id),
                }
                for r in conn.execute(query)
            ]
    if name is not None:
        rows = [r for r in rows if r["name"] == name]
    return rows


def list_history(engine: Engine | None, limit: int = 50) -> list[dict[str, Any]]:
    if engine is None:
        return []
    h = reconciler_applies
    with engine.connect() as conn:
        rows = conn.execute(select(h).order_by(h.c.id.desc()).limit(limit)).mappings().all()
    return [
        {
            "id": r["id"],
            "finished_at": _iso(r["finished_at"]),
            "user": r["user"],
            "command": r["command"],
            "git_commit": r["git_commit"],
            "git_dirty": r["git_dirty"],
            "git_author": r["git_author"],
            "git_subject": r["git_subject"],
            "created": r["created"],
            "updated": r["updated"],
            "deleted": r["deleted"],
            "source": r["source"],
            "plan": r["plan"],
        }
        for r in rows
    ]
