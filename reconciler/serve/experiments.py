"""Experiments in the API, the events and the dashboard: the extension point.

The Experiment kind (comparing agents or prompts on one data set) is built separately; this
module is the one place the server learns about it. ``backend()`` returns an
``ExperimentBackend`` when one is available, else None: the endpoints then answer 501 and the
dashboard says experiments are not part of this build. ``_discover`` finds the kind's views
(``reconciler.runs.experiment_views``) when they are installed and adapts them (``KindBackend``);
``register`` installs another backend (tests do).

The dashboard reads reports in this shape (an adapter maps the kind's report onto it)::

    {"name": "prompt-ab", "status": "completed", "primary_metric": "accuracy",
     "metrics": ["accuracy", "cost_estimate", "latency_ms"],
     "variants": [{"name": "terse", "run": "prompt-ab-terse", "metrics": {"accuracy": 0.8, ...}}, ...]}

``list`` rows need ``name`` and ``status``; ``progress`` maps an experiment's name to what its
``experiment`` event carries (it must change when the experiment moves on).
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import Engine

from reconciler.serve.wire import ApiError


class ExperimentBackend(Protocol):
    def list(self, engine: Engine) -> list[dict[str, Any]]: ...

    def report(self, engine: Engine, name: str) -> dict[str, Any] | None: ...

    def progress(self, engine: Engine) -> dict[str, dict[str, Any]]: ...


_registered: ExperimentBackend | None = None
_discovered = False


def register(backend: ExperimentBackend | None) -> None:
    """Install (or, with None, remove) the backend; tests and the Experiment kind's adapter call this."""
    global _registered, _discovered
    _registered, _discovered = backend, True


def reset() -> None:
    """Forget a registered backend: the next ``backend()`` discovers again."""
    global _registered, _discovered
    _registered, _discovered = None, False


def backend() -> ExperimentBackend | None:
    global _registered, _discovered
    if not _discovered:
        _registered, _discovered = _discover(), True
    return _registered


def _discover() -> ExperimentBackend | None:
    """The Experiment kind's adapter when that kind is part of this build (``runs.experiment_views``)."""
    import importlib

    try:
        experiment_views = importlib.import_module("reconciler.runs.experiment_views")
    except ModuleNotFoundError as exc:
        if exc.name == "reconciler.runs.experiment_views":
            return None
        raise
    return KindBackend(experiment_views)


ARM_METRICS = ("accuracy", "valid", "failed", "latency_p50_ms", "cost_usd")


class KindBackend:
    """Adapts the Experiment kind's views (``experiment_rows``, ``experiment_report(...).data``, as
    ``reconciler experiments list/show -o json`` print them) to the server: the report is served as
    the kind made it, plus the dashboard's ``variants`` (one per arm), ``metrics`` and ``primary_metric``."""

    def __init__(self, views: Any) -> None:
        self._views = views

    def list(self, engine: Engine) -> list[dict[str, Any]]:
        return list(self._views.experiment_rows(engine))

    def report(self, engine: Engine, name: str) -> dict[str, Any] | None:
        from reconciler.errors import ReconcilerError

        if name not in {row["name"] for row in self.list(engine)}:
            return None
        try:
            data = dict(self._views.experiment_report(engine, name).data)
        except ReconcilerError:  # removed between the two reads
            return None
        return {**data, **comparison(data.get("arms") or [])}

    def progress(self, engine: Engine) -> dict[str, dict[str, Any]]:
        keys = ("name", "status", "started_at", "completed_at", "error")
        return {row["name"]: {k: row.get(k) for k in keys} for row in self.list(engine)}


def comparison(arms: list[dict[str, Any]]) -> dict[str, Any]:
    """The dashboard's view of the kind's arms: a row per arm, accuracy first when it was scored."""
    variants = [
        {
            "name": arm.get("agent"),
            "config_sha256": arm.get("config_sha256"),
            "metrics": {
                "accuracy": arm.get("accuracy"),
                "valid": arm.get("valid"),
                "failed": arm.get("failed"),
                "latency_p50_ms": (arm.get("latency_ms") or {}).get("p50"),
                "cost_usd": arm.get("cost_usd"),
            },
        }
        for arm in arms
    ]
    scored = any(arm.get("accuracy") is not None for arm in arms)
    return {"variants": variants, "metrics": list(ARM_METRICS), "primary_metric": "accuracy" if scored else "valid"}


def unavailable() -> ApiError:
    return ApiError(501, "experiments are not part of this reconciler build", "runs are at /api/v1/runs")


def progress(engine: Engine) -> dict[str, dict[str, Any]]:
    """The poller's hook: experiment progress, or nothing without a backend."""
    found = backend()
    return found.progress(engine) if found is not None else {}
