"""Garbage-collector settings for a short command that builds many long-lived objects.

Loading 10,000 manifests or a 10,000-row snapshot allocates millions of objects that live until the
command ends and form almost no reference cycles. With CPython's default thresholds (700, 10, 10)
the collector rescans that growing heap over and over, which took 40% of a `plan`'s time. Freezing
what is already loaded and collecting the young generation less often keeps cycles collected while
removing most of that rescanning.
"""

from __future__ import annotations

import gc

BATCH_THRESHOLDS = (100_000, 50, 100)


def tune_for_batch() -> None:
    """Move everything allocated so far out of the collector's way and make collections rarer."""
    gc.freeze()
    gc.set_threshold(*BATCH_THRESHOLDS)
