"""JSON Schema per manifest kind, and one for any manifest, generated from the kinds, for editors and CI.

Editors (the YAML language server) apply one schema to a whole file, and a file may hold several
kinds, so ``manifest.schema.json`` dispatches on ``kind``: it is self-contained (every kind's
definitions under its ``$defs``), since a relative ``$ref`` would resolve against the ``$id`` URL.

``python -m reconciler.manifests.schemas [DIR]`` (re)writes ``schemas/*.schema.json``; a test
proves the committed files equal what the models generate, so they never drift apart.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from reconciler.manifests.models import MANIFEST_MODELS

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schema_for(kind: str) -> dict[str, Any]:
    schema = MANIFEST_MODELS[kind].model_json_schema()
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": f"https://reconciler.dev/schemas/v1/{kind.lower()}.schema.json",
        "title": f"reconciler/v1 {kind}",
        **{k: v for k, v in schema.items() if k != "title"},
    }


ANY_MANIFEST = "manifest.schema.json"


def any_manifest_schema() -> dict[str, Any]:
    """One schema for a document of any kind: ``kind`` picks the kind's schema (if/then per kind)."""
    defs: dict[str, Any] = {}
    dispatch = []
    for kind, model in MANIFEST_MODELS.items():
        schema = model.model_json_schema()
        for name, definition in schema.pop("$defs", {}).items():
            assert defs.get(name, definition) == definition, f"two kinds define {name} differently"
            defs[name] = definition
        defs[model.__name__] = {k: v for k, v in schema.items() if k != "title"}
        dispatch.append({"if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]}, "then": {"$ref": f"#/$defs/{model.__name__}"}})
    return {
        "$schema": SCHEMA_DIALECT,
        "$id": f"https://reconciler.dev/schemas/v1/{ANY_MANIFEST}",
        "title": "reconciler/v1 manifest (any kind)",
        "description": "A reconciler/v1 manifest of any kind; `kind` selects the schema the document is checked against.",
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {"kind": {"enum": list(MANIFEST_MODELS)}},
        "allOf": dispatch,
        "$defs": defs,
    }


def _render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def render_schemas() -> dict[str, str]:
    """File name -> file content for every kind, and for any manifest."""
    files = {f"{kind.lower()}.schema.json": _render(schema_for(kind)) for kind in MANIFEST_MODELS}
    files[ANY_MANIFEST] = _render(any_manifest_schema())
    return files


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_schemas().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "schemas"
    for p in write_schemas(target):
        print(p)
