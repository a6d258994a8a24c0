"""JSON Schema per manifest kind, generated from the pydantic models, for editors and CI.

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


def render_schemas() -> dict[str, str]:
    """File name -> file content for every kind."""
    return {
        f"{kind.lower()}.schema.json": json.dumps(schema_for(kind), indent=2, sort_keys=True) + "\n"
        for kind in MANIFEST_MODELS
    }


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
