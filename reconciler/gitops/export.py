"""Export: the database's configuration as manifests, so a team can move it into git.

A pure function of the snapshot. Secrets are written as references, never values; for a row
reconciler never managed the reference is unknown, so a ``from_env`` placeholder named after the
provider is written and a warning says so. Names that are not valid manifest names (the seed's
``Message Classifier``) become slugs, and the row's own name is kept in the annotation
``reconciler/row-name``: the service looks rows up by name, so adopt and apply keep it (unless the
annotation is removed, or the rows are renamed with ``reconciler adopt --rename``).
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from reconciler.kinds import CONFIG_KINDS
from reconciler.kinds.base import ROW_NAME, ExportSource
from reconciler.kinds.provider import placeholder_env
from reconciler.state.snapshot import StateSnapshot

__all__ = ["FILE_NAMES", "ExportedDocument", "export_documents", "export_names", "placeholder_env", "render_documents", "slug"]

ResourceKey = tuple[str, str]
FILE_NAMES = {str(k.name): f"{k.plural}.yaml" for k in CONFIG_KINDS}


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
    """The manifest name of every resource: its own when managed or valid, else a slug (an
    unmanaged assignment is named ``AGENT-TASK`` after the exported names of what it refers to)."""
    names: dict[ResourceKey, str] = {}
    for k in CONFIG_KINDS:  # dependency order: what a row refers to is named before it
        for key, r in snapshot.resources.items():
            if r.kind != k.name:
                continue
            if r.managed:
                names[key] = r.name
            elif k.named_rows:
                names[key] = slug(r.name)
            else:
                parts = [names.get((ref.kind, str(r.essence.get(f))), str(r.essence.get(f))) for f, ref in k.references.items()]
                names[key] = slug("-".join(parts))
    return names


def export_documents(snapshot: StateSnapshot) -> list[ExportedDocument]:
    """One manifest per resource, providers first, sorted by name within a kind."""
    names = export_names(snapshot)
    docs = []
    for k in CONFIG_KINDS:
        kind = str(k.name)  # plain text: YAML writes no enums
        for key in sorted(key for key in snapshot.resources if key[0] == kind):
            r = snapshot.resources[key]
            name = names[key]
            exported = k.export(ExportSource(r.essence, r.applied if r.managed else None, name, lambda kd, n: names.get((kd, n), n)))
            spec, notes = exported.spec, list(exported.notes)
            annotations = {a: v for a, v in r.annotations.items() if a != ROW_NAME}
            if k.keeps_row_names and r.db_name != name:  # the row's own name now, which the manifest name cannot be
                annotations[ROW_NAME] = r.db_name
                if not r.managed:
                    notes.insert(
                        0,
                        f"named {r.db_name!r} in the database; {ROW_NAME} keeps that name when it is adopted and applied "
                        f"(remove the annotation to rename the row to {name!r}, or run `reconciler adopt --rename` before exporting)",
                    )
            metadata: dict[str, Any] = {"name": name}
            if r.labels:
                metadata["labels"] = dict(r.labels)
            if annotations:
                metadata["annotations"] = annotations
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

    try:  # libyaml: several times faster
        from yaml import CSafeDumper as _Base
    except ImportError:  # pragma: no cover
        from yaml import SafeDumper as _Base  # type: ignore[assignment]  # types-PyYAML declares libyaml's classes unconditionally

    class _Dumper(_Base):
        pass

    def _str(dumper: _Dumper, value: str) -> yaml.ScalarNode:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    _Dumper.add_representer(str, _str)
    return _Dumper
