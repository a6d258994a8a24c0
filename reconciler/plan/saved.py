"""Saved plans (``plan --out FILE``, ``apply FILE``): the JSON plan and its signature.

``apply FILE`` applies exactly what a reviewer saw, so the file must not change on its way from the
plan job to the apply job: an edited desired value, or a deleted evaluation whose gate failed,
would otherwise apply something nobody planned. The signature is an HMAC-SHA256 of the plan's
canonical JSON under a key derived from the state's secret key (the one that encrypts API keys,
which both jobs need anyway); any key of the ring verifies it, so a plan made before a key
rotation still applies after it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reconciler.errors import Location, Problem, ReconcilerError
from reconciler.plan.model import Plan
from reconciler.plan.render import render_json

if TYPE_CHECKING:
    from reconciler.providers.secrets import SecretBox

SIGNATURE = "signature"  # the saved plan's key holding it; never part of what is signed
PURPOSE = "plan-signature"
REMAKE = "make the plan again with `reconciler plan PATH --out FILE`"


def canonical(document: dict[str, Any]) -> bytes:
    """The bytes signed: key order and white space do not matter, every value does."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signed_text(plan: Plan, box: SecretBox) -> str:
    """The saved plan file: the plan as ``plan --json`` prints it, plus its signature."""
    return signed_document_text(json.loads(render_json(plan)), box)  # the values as the file holds them (timestamps as text)


def signed_document_text(document: dict[str, Any], box: SecretBox) -> str:
    """A plan document (``Plan.to_dict`` as JSON reads it back) and its signature, as a file's text."""
    return json.dumps({**document, SIGNATURE: box.sign(canonical(document), PURPOSE)}, indent=2, ensure_ascii=False) + "\n"


def verified_plan(text: str, box_for: Callable[[], SecretBox], where: str) -> Plan:
    """The plan in a saved plan file, refused unless its signature holds under a key of the ring
    ``box_for`` loads (only once the file is known to be a signed plan)."""
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise _not_a_plan(f"not a saved reconciler plan: {exc}", where) from None
    if not isinstance(document, dict) or "changes" not in document:
        raise _not_a_plan("not a saved reconciler plan: it has no changes", where)
    signature = document.pop(SIGNATURE, None)
    if not isinstance(signature, str):
        raise ReconcilerError(
            Problem(
                "this saved plan is not signed, so nothing shows it is the plan that was made and reviewed",
                Location(where),
                hint=f"{REMAKE} (plans saved before reconciler signed them must be made again)",
            )
        )
    box = box_for()
    if not box.signed(canonical(document), signature, PURPOSE):
        raise ReconcilerError(
            Problem(
                f"the saved plan's signature does not match the secret key from {box.source}: the file was changed after "
                "`reconciler plan --out` wrote it, or it was signed with another secret key; nothing was applied",
                Location(where),
                hint=f"apply it with the secret key the plan job used, or {REMAKE}",
            )
        )
    try:
        return Plan.from_dict(document)
    except (ValueError, KeyError, TypeError) as exc:
        raise _not_a_plan(f"not a saved reconciler plan: {exc}", where) from None


def _not_a_plan(message: str, where: str) -> ReconcilerError:
    return ReconcilerError(Problem(message, Location(where), hint="create one with `reconciler plan PATH --out FILE`"))


def write_saved_plan(plan: Plan, box: SecretBox, path: str) -> None:
    try:
        Path(path).write_text(signed_text(plan, box), encoding="utf-8")
    except OSError as exc:
        raise ReconcilerError(f"cannot write plan file {path}: {exc.strerror}") from None


def read_saved_plan(path: str, box_for: Callable[[], SecretBox]) -> Plan:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReconcilerError(Problem(f"cannot read saved plan: {exc}", Location(path))) from None
    return verified_plan(text, box_for, path)
