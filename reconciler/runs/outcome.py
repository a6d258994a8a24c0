"""What a finished run or experiment means for the exit status of `reconciler run`.

0 when every item is valid; 1 for an error (nothing ran, or it stopped with items unfinished: an
unreachable provider, Ctrl-C); 100 when every item finished and some failed, promptfoo's convention,
so CI can tell "the model got some wrong" from "the tool broke". RECONCILER_FAILED_ITEMS_EXIT_CODE
chooses another code for that case (0 makes failed items pass).
"""

from __future__ import annotations

import enum
import os
from collections.abc import Iterable

from reconciler.errors import ReconcilerError

FAILED_ITEMS_EXIT_ENV = "RECONCILER_FAILED_ITEMS_EXIT_CODE"
DEFAULT_FAILED_ITEMS_EXIT_CODE = 100


class Outcome(enum.IntEnum):
    """Ordered by severity: the worst of several runs decides."""

    OK = 0
    FAILED_ITEMS = 1
    ERROR = 2


def outcome_of(items_failed: int, items_unfinished: int) -> Outcome:
    if items_unfinished:
        return Outcome.ERROR
    return Outcome.FAILED_ITEMS if items_failed else Outcome.OK


def failed_items_exit_code(environ: dict[str, str] | None = None) -> int:
    raw = (os.environ if environ is None else environ).get(FAILED_ITEMS_EXIT_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_FAILED_ITEMS_EXIT_CODE
    try:
        code = int(raw)
    except ValueError:
        code = -1
    if not 0 <= code <= 255:
        raise ReconcilerError(
            f"${FAILED_ITEMS_EXIT_ENV} is {raw!r}, not an exit status",
            hint=f"set it to a number from 0 to 255 (default {DEFAULT_FAILED_ITEMS_EXIT_CODE}), or unset it",
        )
    return code


def exit_code(outcomes: Iterable[Outcome], failed_items_code: int = DEFAULT_FAILED_ITEMS_EXIT_CODE) -> int:
    worst = max(outcomes, default=Outcome.OK)
    return {Outcome.OK: 0, Outcome.FAILED_ITEMS: failed_items_code, Outcome.ERROR: 1}[worst]
