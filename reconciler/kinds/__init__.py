"""The resource kinds, one module each, listed in dependency order: a kind refers only to kinds
before it, so creates and updates run in this order and deletes in reverse."""

from __future__ import annotations

from reconciler.kinds.agent import AGENT
from reconciler.kinds.assignment import ASSIGNMENT
from reconciler.kinds.base import Kind, KindName
from reconciler.kinds.experiment import EXPERIMENT
from reconciler.kinds.provider import PROVIDER
from reconciler.kinds.run import RUN
from reconciler.kinds.task import TASK

KINDS: tuple[Kind, ...] = (PROVIDER, TASK, AGENT, ASSIGNMENT, RUN, EXPERIMENT)
BY_NAME: dict[str, Kind] = {str(k.name): k for k in KINDS}
KIND_NAMES: tuple[str, ...] = tuple(BY_NAME)  # plain text, for messages and manifests
CONFIG_KINDS: tuple[Kind, ...] = tuple(k for k in KINDS if k.managed_by_gitops)  # what get/export/adopt cover
ALIASES: dict[str, Kind] = {alias: k for k in CONFIG_KINDS for alias in k.aliases}  # "agent", "agents", ...
ORDER: dict[str, int] = {str(k.name): i for i, k in enumerate(KINDS)}

assert all(ORDER[ref.kind] < ORDER[k.name] for k in KINDS for ref in k.references.values()), "KINDS is not in dependency order"


def kind(name: str) -> Kind:
    return BY_NAME[name]


__all__ = ["ALIASES", "BY_NAME", "CONFIG_KINDS", "KINDS", "KIND_NAMES", "ORDER", "Kind", "KindName", "kind"]
