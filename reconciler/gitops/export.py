"""Export: the database's configuration as manifests, so a team can move it into git.

A pure function of the snapshot. Secrets are written as references, never values; for a row
reconciler never managed the reference is unknown, so a ``from_env`` placeholder named after the
provider is written and a warning says so. Names that are not valid manifest names (the seed's
``Message Classifier``) become slugs; ``reconciler adopt`` renames those rows to match.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from reconciler.state.snapshot import ActualResource, StateSnapshot

ResourceKey = tuple[str, str]
EXPORT_ORDER = ("Provider", "Task", "Agent", "Assignment")
FILE_NAMES = {"Provider": "providers.yaml", "Task": "tasks.yaml", "Agent": "agents.yaml", "Assignment": "assignments.yaml"}


@functools.cache
def _valid_name() -> re.Pattern[str]:
    from reconciler.manifests.models import (
        NAME_PATTERN,  # imports pydantic: only when exporting
    )

    return re.compile(NAME_PATTERN)


@dataclass(frozen=True)
class ExportedDocument:
    kind: str
    name: str
    manifest: dict[str, Any]
    notes: tuple[str, ...] = field(default=())  # written as comments above the document, and as warnings
    managed: bool = True


def slug(text: str) -> str:
    """A valid manifest name for ``text``: lowercase, '-' for anything else, at most 63 characters."""
    if _valid_name().match(text):
        return text
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if base and len(base) <= 63 and _valid_name().match(base):
        return base
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{base[:54].strip('-') or 'x'}-{digest}"


def export_names(snapshot: StateSnapshot) -> dict[ResourceKey, str]:
    """The manifest name of every resource: its own when managed or valid, else a slug
    (an unmanaged assignment is named ``AGENT-TASK`` after the exported names of both)."""
    names: dict[ResourceKey, str] = {}
    for key, r in snapshot.resources.items():
        if r.kind != "Assignment":
            names[key] = r.name if r.managed else slug(r.name)
    for key, r in snapshot.resources.items():
        if r.kind == "Assignment":
            agent_name, task_name = str(r.essence.get("agent")), str(r.essence.get("task"))
            agent = names.get(("Agent", agent_name), agent_name)
            task = names.get(("Task", task_name), task_name)
            names[key] = r.name if r.managed else slug(f"{agent}-{task}")
    return names


def placeholder_env(provider_name: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", provider_name.upper()).strip("_") + "_API_KEY"


def _secret_ref(r: ActualResource, name: str) -> tuple[dict[str, str] | None, list[str]]:
    current = r.essence.get("api_key")
    applied = (r.applied or {}).get("api_key")
    if current is None:
        return None, []
    ref = applied.get("ref") if isinstance(applied, dict) and r.managed else None
    if isinstance(ref, str) and ref.startswith("env:"):
        return {"from_env": ref[4:]}, []
    if isinstance(ref, str) and ref.startswith("file:"):
        return {"from_file": ref[5:]}, [f"api_key is read from {ref[5:]!r}, relative to this file: copy the secret file next to it (never into git)"]
    var = placeholder_env(name)
    note = (
        f"api_key: the database holds an encrypted key but not where it came from; {var} is a placeholder: "
        f"export {var} with the key (or point api_key at your secret) before planning"
    )
    return {"from_env": var}, [note]


def _spec(r: ActualResource, names: dict[ResourceKey, str]) -> tuple[dict[str, Any], list[str]]:
    e = r.essence
    notes: list[str] = []
    spec: dict[str, Any]
    if r.kind == "Provider":
        spec = {"type": e["type"]}
        if e.get("base_url"):
            spec["base_url"] = e["base_url"]
        ref, notes = _secret_ref(r, names[(r.kind, r.name)])
        if ref is not None:
            spec["api_key"] = ref
        if e.get("model_path"):
            spec["model_path"] = e["model_path"]
    elif r.kind == "Agent":
        spec = {"description": e.get("description"), "provider": names.get(("Provider", e["provider"]), e["provider"]), "model_name": e["model_name"],
                "system_prompt": e.get("system_prompt") or "", "temperature": e.get("temperature"), "max_tokens": e.get("max_tokens")}
        if e.get("temperature") is None:
            spec["temperature"] = 0.7
            notes.append("temperature is NULL in the database; manifests need a number, so the default 0.7 is written")
        if e.get("prices"):
            spec["prices"] = e["prices"]
        if e.get("examples"):
            spec["examples"] = e["examples"]
    elif r.kind == "Task":
        spec = {"description": e.get("description"), "response_schema": e.get("response_schema") or {}}
    else:
        spec = {"agent": names.get(("Agent", e["agent"]), e["agent"]), "task": names.get(("Task", e["task"]), e["task"])}
    spec = {k: v for k, v in spec.items() if v is not None}
    if not e.get("is_active", True):
        spec["is_active"] = False
    return spec, notes


def export_documents(snapshot: StateSnapshot) -> list[ExportedDocument]:
    """One manifest per resource, providers first, sorted by name within a kind."""
    names = export_names(snapshot)
    docs = []
    for kind in EXPORT_ORDER:
        for key in sorted(k for k in snapshot.resources if k[0] == kind):
            r = snapshot.resources[key]
            spec, notes = _spec(r, names)
            name = names[key]
            if name != r.name and r.kind != "Assignment":
                notes.insert(0, f"named {r.name!r} in the database; `reconciler adopt {kind.lower()}/{name}` renames the row to match")
            metadata: dict[str, Any] = {"name": name}
            if r.labels:
                metadata["labels"] = dict(r.labels)
            if r.annotations:
                metadata["annotations"] = dict(r.annotations)
            manifest = {"apiVersion": "reconciler/v1", "kind": kind, "metadata": metadata, "spec": spec}
            docs.append(ExportedDocument(kind, name, manifest, tuple(notes), r.managed))
    return docs


def render_documents(docs: list[ExportedDocument]) -> str:
    """A multi-document YAML stream; notes become comments above their document."""
    parts = []
    for d in docs:
        notes = d.notes if d.managed else (*d.notes, f"not managed by reconciler yet: `reconciler adopt {d.kind.lower()}/{d.name}` before applying")
        comments = "".join(f"# {line}\n" for note in notes for line in note.splitlines())
        parts.append(comments + _to_yaml(d.manifest))
    return "---\n".join(parts)


def _to_yaml(data: Any) -> str:
    import yaml

    return yaml.dump(data, Dumper=_dumper(), sort_keys=False, allow_unicode=True)


@functools.cache
def _dumper() -> Any:
    """Multi-line strings as literal blocks, so prompts read as they were written."""
    import yaml

    base = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml: several times faster

    class _Dumper(base):  # type: ignore[misc, valid-type]
        pass

    def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    _Dumper.add_representer(str, _str)
    return _Dumper
