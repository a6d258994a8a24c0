"""The web dashboard: server-rendered HTML (Jinja2, autoescaped) and one small script.

The page is built from sections; ``/partials/SECTION`` renders one of them alone, and the script
re-fetches the sections an event concerns (an apply touches most, a validation update only the
providers), so the first load and every live update go through the same template: there is no
second renderer in JavaScript to drift from it, and no build step.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from reconciler import __version__
from reconciler.serve import experiments, queries

HERE = Path(__file__).parent
SECTIONS = ("status", "providers", "applies", "drift", "runs", "experiments")
# Drift needs the whole snapshot (0.4 s at 10,000 resources): the page is sent without it and the
# script fetches the section at once, so the rest shows without waiting for it.
DEFERRED = ("drift",)
APPLIES_SHOWN = 10
RUNS_SHOWN = 20
PROVIDERS_SHOWN = 200


def _money(value: float | None) -> str:
    """USD as people read it: a fraction of a cent keeps its significant digits."""
    if value is None:
        return "–"
    if value == 0:
        return "$0"
    if value >= 1:
        return f"${value:,.2f}"
    digits = max(4, 1 - math.floor(math.log10(value)))  # two significant digits: $0.000018
    return f"${value:.{digits}f}"


@functools.cache
def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["percent"] = lambda v: "–" if v is None else f"{v:.0%}"
    env.filters["money"] = _money
    env.filters["short"] = lambda v, n=10: "" if not v else str(v)[:n]
    env.filters["when"] = lambda v: "" if not v else str(v).replace("T", " ").split("+")[0]
    return env


def _status(engine: Engine | None, display: str) -> dict[str, Any]:
    from reconciler.serve.api import Context, status

    body = status(Context(engine, {}, {})).body
    return {"status": body, "display": display}


def _providers(engine: Engine | None) -> dict[str, Any]:
    listing = queries.list_providers(engine, queries.Page(0, PROVIDERS_SHOWN)) if engine else queries.Listing([], 0)
    return {"providers": listing.rows, "total": listing.total}


def _applies(engine: Engine | None) -> dict[str, Any]:
    listing = queries.list_history(engine, queries.Page(0, APPLIES_SHOWN)) if engine else queries.Listing([], 0)
    return {"applies": listing.rows, "total": listing.total}


def _drift(engine: Engine | None, known: dict[str, Any] | None = None) -> dict[str, Any]:
    if known is not None:
        return {"drift": known["drift"], "count": known["count"]}
    if engine is None:
        return {"drift": [], "count": 0}
    from reconciler.gitops.drift import detect_drift
    from reconciler.state.snapshot import load_snapshot

    found = [d.to_dict() for d in detect_drift(load_snapshot(engine))]
    return {"drift": found, "count": len(found)}


def _runs(engine: Engine | None) -> dict[str, Any]:
    listing = queries.list_runs(engine, queries.Page(0, RUNS_SHOWN)) if engine else queries.Listing([], 0)
    return {"runs": listing.rows, "total": listing.total}


def _experiments(engine: Engine | None) -> dict[str, Any]:
    backend = experiments.backend()
    if backend is None:
        return {"available": False, "experiments": [], "reports": []}
    rows = backend.list(engine) if engine else []
    reports = [r for r in (backend.report(engine, row["name"]) for row in rows[:5]) if r is not None] if engine else []
    return {"available": True, "experiments": rows, "reports": [chart(r) for r in reports]}


def chart(report: dict[str, Any]) -> dict[str, Any]:
    """A report with what its bar chart needs: each variant's primary metric as a share of the best."""
    metric = report.get("primary_metric") or (report.get("metrics") or [None])[0]
    values = [v.get("metrics", {}).get(metric) for v in report.get("variants", [])]
    numbers = [v for v in values if isinstance(v, (int, float))]
    top = max(numbers, default=0) or 1
    bars = [
        {"name": v["name"], "value": value, "width": (value / top * 100 if isinstance(value, (int, float)) and value > 0 else 0)}
        for v, value in zip(report.get("variants", []), values, strict=True)
    ]
    return {**report, "chart_metric": metric, "bars": bars, "percent_metric": all(0 <= n <= 1 for n in numbers)}


SECTION_DATA: dict[str, Callable[..., dict[str, Any]]] = {
    "providers": _providers,
    "applies": _applies,
    "drift": _drift,
    "runs": _runs,
    "experiments": _experiments,
}


def section_context(section: str, engine: Engine | None, display: str, drift: dict[str, Any] | None = None) -> dict[str, Any]:
    if section == "status":
        return _status(engine, display)
    if section == "drift":
        return _drift(engine, drift)
    return SECTION_DATA[section](engine)


def render_section(section: str, engine: Engine | None, display: str, drift: dict[str, Any] | None = None) -> str:
    """One section's HTML; ``drift`` is a drift check already made (the poller's), to reuse."""
    return _environment().get_template(f"_{section}.html").render(**section_context(section, engine, display, drift))


def render_page(engine: Engine | None, display: str) -> str:
    from markupsafe import Markup

    rendered = {
        section: Markup(render_section(section, engine, display) if section not in DEFERRED else "")  # autoescaped templates
        for section in SECTIONS
    }
    return _environment().get_template("dashboard.html").render(version=__version__, sections=rendered, deferred=DEFERRED)
