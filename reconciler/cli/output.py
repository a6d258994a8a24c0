"""Printing listings as a table, JSON or YAML."""

from __future__ import annotations

import json
from typing import Any

import click


def emit_rows(rows: list[dict[str, Any]], fmt: str, columns: list[str]) -> None:
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2, default=str, ensure_ascii=False))
    elif fmt == "yaml":
        import yaml

        click.echo(yaml.safe_dump(json.loads(json.dumps(rows, default=str)), sort_keys=False, allow_unicode=True), nl=False)
    else:
        click.echo(format_table(rows, columns))


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
    header = "  ".join(c.upper().ljust(w) for c, w in zip(columns, widths))
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join([header.rstrip(), *lines])
