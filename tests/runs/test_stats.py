"""The statistics against published values and against scipy/numpy (test-only dependencies)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest

from reconciler.runs import stats


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        # Newcombe (1998), "Two-sided confidence intervals for the single proportion", Stat Med 17:857, Table I, method 3
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
    ids=["81/263", "15/148", "0/20", "1/29"],
)
def test_wilson_interval_matches_newcombe(successes: int, n: int, low: float, high: float) -> None:
    assert stats.wilson_interval(successes, n) == (pytest.approx(low, abs=5e-5), pytest.approx(high, abs=5e-5))


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 5000).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))))
def test_wilson_interval_matches_scipy(case: tuple[int, int]) -> None:
    successes, n = case
    ci = binomtest(successes, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert stats.wilson_interval(successes, n) == (pytest.approx(ci.low, abs=1e-12), pytest.approx(ci.high, abs=1e-12))


def test_wilson_interval_edges() -> None:
    assert stats.wilson_interval(0, 0) is None
    assert stats.wilson_interval(20, 20) == (pytest.approx(0.8389, abs=5e-5), 1.0)
    with pytest.raises(ValueError):
        stats.wilson_interval(3, 2)


@pytest.mark.parametrize(
    ("only_a", "only_b", "p"),
    [
        # Fagerland, Lydersen, Laake (2013), BMC Med Res Methodol 13:91: 1 and 7 discordant pairs, exact conditional p = 0.070
        (1, 7, 18 / 256),
        (7, 1, 18 / 256),
        (6, 16, 0.052478790283203125),  # 2 * P(X <= 6 | n = 22, 1/2) = 220112 / 4194304
        (0, 5, 2 / 32),
        (0, 0, 1.0),
        (3, 3, 1.0),
        (4, 5, 1.0),
    ],
    ids=["fagerland-1-7", "mirrored", "6-16", "0-5", "no-discordant", "tie", "near-tie"],
)
def test_mcnemar_exact_known_values(only_a: int, only_b: int, p: float) -> None:
    assert stats.mcnemar_exact_p(only_a, only_b) == pytest.approx(p, rel=1e-12)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 3000), st.integers(0, 3000))
def test_mcnemar_exact_matches_scipy_binomtest(only_a: int, only_b: int) -> None:
    n = only_a + only_b
    expected = 1.0 if n == 0 else binomtest(only_a, n, 0.5, alternative="two-sided").pvalue
    # scipy rounds p-values below ~1e-290 to 0; ours stay exact there
    assert stats.mcnemar_exact_p(only_a, only_b) == pytest.approx(expected, rel=1e-9, abs=1e-250)


def test_mcnemar_exact_with_10000_pairs_is_exact() -> None:
    # float terms underflow at this size; the integer sum does not
    assert stats.mcnemar_exact_p(4900, 5100) == pytest.approx(binomtest(4900, 10000).pvalue, rel=1e-9)
    assert stats.mcnemar_exact_p(0, 10000) == 0.0  # 2 / 2**10000: below the smallest float, and no OverflowError


def test_paired_counts_and_diff() -> None:
    a = [True, True, False, False, True, False]
    b = [True, False, True, False, False, False]
    counts = stats.paired_counts(a, b)
    assert counts == stats.PairedCounts(both_right=1, only_a_right=2, only_b_right=1, both_wrong=2)
    assert counts.n == 6
    assert counts.accuracy_diff == pytest.approx((3 - 2) / 6)
    assert counts.mcnemar_p == pytest.approx(binomtest(2, 3).pvalue)
    with pytest.raises(ValueError):
        stats.paired_counts([True], [])


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (["bug", "feature", "bug"], ["bug", "bug", "bug"], 2 / 3),
        (["bug", None], ["bug", None], 1 / 2),  # no answer agrees with nothing
        ([], [], None),
    ],
    ids=["two-of-three", "none-never-agrees", "empty"],
)
def test_agreement(a: list[str | None], b: list[str | None], expected: float | None) -> None:
    assert stats.agreement(a, b) == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        (["bug", "bug", "bug"], 1.0),
        (["bug", "feature", "bug"], 2 / 3),
        (["bug", None, None], 1 / 3),
        ([None, None], 0.0),
        ([], None),
    ],
    ids=["always-same", "two-of-three", "missing-count-against", "never-answered", "no-repeats"],
)
def test_consistency(answers: list[str | None], expected: float | None) -> None:
    assert stats.consistency(answers) == (pytest.approx(expected) if expected is not None else None)


def test_pass_hat_k_and_majority() -> None:
    rights = [[True, True, True], [True, False, True], [False, False, False], [True, True, True]]
    assert stats.pass_hat_k(rights) == 0.5
    assert stats.pass_hat_k([]) is None
    assert [stats.majority_right(r) for r in rights] == [True, True, False, True]
    assert stats.majority_right([True, False]) is False  # a tie is not a majority


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=200), st.sampled_from([0, 5, 50, 90, 95, 99, 100]))
def test_percentile_matches_numpy(values: list[float], q: int) -> None:
    assert stats.percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-9, abs=1e-9)


def test_percentile_and_mean_of_nothing() -> None:
    assert stats.percentile([], 50) is None
    assert stats.mean([]) is None
    assert stats.mean([1.0, 2.0, 4.0]) == pytest.approx(7 / 3)
