"""Files that manifests point at (schemas, inputs), read under the same limits as manifests.

Where such a file may be (inside the manifests' root) is ``reconciler.paths``; its names are
re-exported here for the loader.
"""

from __future__ import annotations

import csv
import io
import json
import string
from pathlib import Path
from typing import Any

from reconciler.paths import ALLOW_OUTSIDE_ROOT_ENV, MAX_REFERENCED_FILE_BYTES, FileRefError, outside_root_allowed, resolve_within

__all__ = [
    "ALLOW_OUTSIDE_ROOT_ENV",
    "MAX_REFERENCED_FILE_BYTES",
    "FileRefError",
    "normalize_input",
    "outside_root_allowed",
    "read_inputs_file",
    "read_schema_file",
    "resolve_within",
    "template_fields",
    "too_deep",
]


def too_deep(value: Any, limit: int) -> bool:
    """Whether JSON-shaped data nests deeper than ``limit`` (iterative: safe on any depth)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth >= limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def _load_json(text: str, name: str, line: int = 0) -> Any:
    """json.loads that turns malformed or absurdly nested input into a FileRefError."""
    from reconciler.manifests.yamlfile import MAX_DEPTH

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FileRefError(f"{name} is not valid JSON: {exc.msg}", line=line or exc.lineno) from None
    except RecursionError:
        value = None
        deep = True
    else:
        deep = too_deep(value, MAX_DEPTH)
    if deep:
        raise FileRefError(f"{name} nests deeper than {MAX_DEPTH} levels", hint="simplify it", line=line)
    return value


def read_schema_file(path: Path) -> dict[str, Any]:
    """A JSON Schema from a .json, .yaml or .yml file, read under the same limits as manifests."""
    from reconciler.manifests.yamlfile import read_yaml_file

    if path.suffix == ".json":
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise FileRefError(f"cannot read {path.name}: {exc}") from None
        data = _load_json(text, path.name)
    else:
        documents, problems = read_yaml_file(path, path.name)
        errors = [p for p in problems if p.severity == "error"]
        if errors:
            first = errors[0]
            line = first.location.line if first.location else 0
            raise FileRefError(f"{path.name} is not a usable YAML file: {first.message}", hint=first.hint, line=line)
        if len(documents) != 1:
            raise FileRefError(f"{path.name} must hold exactly one YAML document, found {len(documents)}")
        data = documents[0].data
    if not isinstance(data, dict):
        raise FileRefError(f"{path.name} must hold a JSON Schema object, found {type(data).__name__}")
    return data


def read_inputs_file(path: Path) -> list[dict[str, Any]]:
    """Inputs for a run: JSON Lines (objects or strings) or CSV with a header row."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise FileRefError(f"cannot read {path.name}: {exc}") from None
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames:
            raise FileRefError(f"{path.name} has no header row", hint="the first CSV row names the fields", line=1)
        rows = []
        try:
            for row in reader:
                if None in row or any(v is None for v in row.values()):
                    raise FileRefError(
                        f"{path.name}: row has {len([v for v in row.values() if v is not None]) + len(row.get(None) or [])} "
                        f"fields, the header has {len(reader.fieldnames)}",
                        line=reader.line_num,
                    )
                rows.append(dict(row))
        except csv.Error as exc:
            raise FileRefError(f"{path.name}: malformed CSV: {exc}", line=reader.line_num) from None
        if not rows:
            raise FileRefError(f"{path.name} has a header but no rows")
        return rows
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        value = _load_json(line, f"{path.name}: line {number}", number)
        rows.append(normalize_input(value, f"{path.name}: line {number}", number))
    if not rows:
        raise FileRefError(f"{path.name} holds no inputs")
    return rows


def normalize_input(value: Any, where: str, line: int = 0) -> dict[str, Any]:
    """A run input as a mapping: a bare string becomes ``{"input": ...}``."""
    if isinstance(value, str):
        return {"input": value}
    if isinstance(value, dict):
        return value
    raise FileRefError(f"{where}: an input must be a string or an object, found {type(value).__name__}", line=line)


def template_fields(template: str) -> list[str]:
    """Placeholder names in a ``{field}`` template; raises FileRefError when it is malformed."""
    try:
        names = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as exc:
        raise FileRefError(f"prompt_template is malformed: {exc}", hint="write literal braces as '{{' and '}}'") from None
    bad = [n for n in names if not n.isidentifier()]
    if bad:
        raise FileRefError(f"prompt_template placeholder {{{bad[0]}}} is not a plain field name", hint="use {field} with a field of the inputs")
    return names
