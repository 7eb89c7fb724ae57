"""Timing statistics: the median CI, IQR, noise flag and growth exponent on samples with known answers."""

from __future__ import annotations

import math

import pytest

from equiv_core.bench.statistics import growth_exponent, median_ci_ranks, summarize


@pytest.mark.parametrize("n", [6, 10, 11, 20, 50])
def test_median_ci_has_at_least_95_percent_coverage_and_is_tightest(n: int) -> None:
    low, high = median_ci_ranks(n)

    def coverage(lower: int, upper: int) -> float:
        return sum(math.comb(n, i) for i in range(lower + 1, upper + 1)) / 2**n

    assert coverage(low, high) >= 0.95
    assert coverage(low + 1, high - 1) < 0.95


def test_median_ci_for_ten_rounds_is_second_to_ninth() -> None:
    assert median_ci_ranks(10) == (1, 8)


def test_summarize_known_samples() -> None:
    stats = summarize([float(value) for value in range(1, 11)])
    assert (stats.n, stats.median_s, stats.min_s) == (10, 5.5, 1.0)
    assert stats.iqr_s == pytest.approx(4.5)
    assert (stats.ci95_low_s, stats.ci95_high_s) == (2.0, 9.0)
    assert stats.noisy


def test_tight_samples_are_not_noisy() -> None:
    assert not summarize([1.0, 1.01, 0.99, 1.0, 1.02, 0.98]).noisy


def test_growth_exponent_recovers_linear_and_quadratic() -> None:
    sizes = [8, 16, 32, 64]
    assert growth_exponent(sizes, [0.1 * size for size in sizes]) == pytest.approx(1.0)
    assert growth_exponent(sizes, [0.01 * size**2 for size in sizes]) == pytest.approx(2.0)
    assert growth_exponent([8], [1.0]) is None


def test_no_samples_is_an_error() -> None:
    with pytest.raises(ValueError, match="no timing samples"):
        summarize([])
