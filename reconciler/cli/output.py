"""Printing listings as a table, JSON or YAML."""

from __future__ import annotations

import json
from typing import Any

import click


def emit_rows(rows: list[dict[str, Any]], fmt: str, columns: list[str]) -> None:
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, default=str, ensure_ascii=False))
    elif fmt == "yaml":
        click.echo(to_yaml(json.loads(json.dumps(rows, default=str))), nl=False)
    else:
        click.echo(format_table(rows, columns))


def emit_batch_rows(rows: list[dict[str, Any]], fmt: str, columns: list[str]) -> None:
    """Runs or experiments; under a table, why each interrupted one stopped (on stderr)."""
    emit_rows(rows, fmt, columns)
    if fmt == "table":
        for row in rows:
            if row["status"] == "interrupted":
                click.echo(f"{row['name']}: {row['error']}", err=True)


def to_yaml(data: Any) -> str:
    """YAML with multi-line strings as literal blocks, so prompts read as they were written."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _str)
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True)


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    text = str(v).replace("\n", " ")
    return text if len(text) <= 60 else text[:57] + "..."


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "No resources found."
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    header = "  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join([header.rstrip(), *lines])
