"""reconciler: GitOps for LLM agent configuration.

``from reconciler import Client`` loads the application client on first use: importing the package
stays free for the command line (plan and apply never import the client's dependencies)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "AgentCallFailed",
    "AgentInactive",
    "AgentNotFound",
    "Client",
    "ClientError",
    "InvalidAgentOutput",
    "ManagedAgent",
    "ModelNotFound",
    "Result",
    "TaskNotAssigned",
    "TaskNotFound",
    "__version__",
]
_LAZY = {name: "reconciler.client" for name in __all__ if name != "__version__"}

if TYPE_CHECKING:
    from reconciler.client import (
        AgentCallFailed,
        AgentInactive,
        AgentNotFound,
        Client,
        ClientError,
        InvalidAgentOutput,
        ManagedAgent,
        ModelNotFound,
        Result,
        TaskNotAssigned,
        TaskNotFound,
    )


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'reconciler' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
