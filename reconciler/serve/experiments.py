"""Experiments in the API, the events and the dashboard: the extension point.

The Experiment kind (comparing agents or prompts on one data set) is built separately; this
module is the one place the server learns about it. ``backend()`` returns an
``ExperimentBackend`` when one is available, else None: the endpoints then answer 501 and the
dashboard says experiments are not part of this build. Wiring the kind in means making
``_discover`` return an adapter over its report function (or calling ``register``), nothing else.

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


def backend() -> ExperimentBackend | None:
    global _registered, _discovered
    if not _discovered:
        _registered, _discovered = _discover(), True
    return _registered


def _discover() -> ExperimentBackend | None:
    """The Experiment kind's adapter, once that kind is part of reconciler (not yet in this build)."""
    return None


def unavailable() -> ApiError:
    return ApiError(501, "experiments are not part of this reconciler build", "runs are at /api/v1/runs")


def progress(engine: Engine) -> dict[str, dict[str, Any]]:
    """The poller's hook: experiment progress, or nothing without a backend."""
    found = backend()
    return found.progress(engine) if found is not None else {}
