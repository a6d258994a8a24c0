"""Statistics for comparing configurations: pure functions over counts and answers, no I/O.

Twenty items are few: a difference of 10 points between two agents on 20 messages is often noise.
These tell it apart. Each is checked against scipy and published values (tests/runs/test_stats.py);
scipy is a test dependency only, so these are written out in plain Python.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal: a two-sided 95% interval


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval for a proportion (Wilson 1927; Newcombe 1998's method 3).

    Unlike the textbook p ± z·sqrt(p(1-p)/n) it stays inside [0, 1] and does not collapse to a point
    at 0/n or n/n, which matters at the sizes runs have. None when there is nothing to estimate."""
    if n <= 0:
        return None
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be between 0 and n ({n}), got {successes}")
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = (z / (1 + z2 / n)) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # exact ends where the formula's rounding would leave 1e-17 outside
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return (low, high)


def mcnemar_exact_p(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test of ``only_a`` successes in the discordant pairs
    ``only_a + only_b`` against p = 1/2 (the pairs both got right or both got wrong say nothing about
    which is better). 1.0 when there are no discordant pairs.

    Computed in exact integers (sum of binomial coefficients over 2^n), so it is right also for
    10,000 pairs, where floating-point terms underflow."""
    if only_a < 0 or only_b < 0:
        raise ValueError("counts must not be negative")
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    if 2 * k == n:
        return 1.0
    term = 1  # C(n, 0)
    tail = 0
    for i in range(k + 1):
        tail += term
        term = term * (n - i) // (i + 1)
    return min(1.0, (2 * tail) / (1 << n))


@dataclass(frozen=True)
class PairedCounts:
    """How two configurations did on the same items: the 2x2 table McNemar's test reads."""

    both_right: int
    only_a_right: int
    only_b_right: int
    both_wrong: int

    @property
    def n(self) -> int:
        return self.both_right + self.only_a_right + self.only_b_right + self.both_wrong

    @property
    def accuracy_diff(self) -> float | None:
        """Accuracy of a minus accuracy of b, over the paired items."""
        return (self.only_a_right - self.only_b_right) / self.n if self.n else None

    @property
    def mcnemar_p(self) -> float:
        return mcnemar_exact_p(self.only_a_right, self.only_b_right)


def paired_counts(a_right: Sequence[bool], b_right: Sequence[bool]) -> PairedCounts:
    """The 2x2 table of two equally long sequences of per-item correctness (item i of a with item i of b)."""
    if len(a_right) != len(b_right):
        raise ValueError(f"paired sequences differ in length ({len(a_right)} and {len(b_right)})")
    table = Counter(zip(map(bool, a_right), map(bool, b_right), strict=True))
    return PairedCounts(table[(True, True)], table[(True, False)], table[(False, True)], table[(False, False)])


def agreement(a: Sequence[Hashable | None], b: Sequence[Hashable | None]) -> float | None:
    """Share of paired items on which both gave the same answer; None stands for no (valid) answer
    and agrees with nothing, not even another None."""
    if len(a) != len(b):
        raise ValueError(f"paired sequences differ in length ({len(a)} and {len(b)})")
    if not a:
        return None
    return sum(1 for x, y in zip(a, b, strict=True) if x is not None and x == y) / len(a)


def consistency(answers: Sequence[Hashable | None]) -> float | None:
    """Share of one item's repeats that gave its most common answer (1.0: it always says the same).
    A missing answer (None) counts as a repeat that did not give it."""
    if not answers:
        return None
    given = Counter(a for a in answers if a is not None)
    return (given.most_common(1)[0][1] if given else 0) / len(answers)


def pass_hat_k(rights: Sequence[Sequence[bool]]) -> float | None:
    """pass^k (Yao et al. 2024, tau-bench): the share of items right in every one of their k repeats.
    Stricter than accuracy: an agent right 80% of the time at random scores 0.8^k, not 0.8."""
    if not rights:
        return None
    return sum(1 for r in rights if r and all(r)) / len(rights)


def majority_right(rights: Sequence[bool]) -> bool:
    """One verdict per item from its repeats, for paired tests: right in more than half of them."""
    return 2 * sum(map(bool, rights)) > len(rights)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation between order statistics: numpy's
    default ("linear", Hyndman and Fan's type 7). None for no values."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"q must be between 0 and 100, got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None
