"""Timing statistics: the median CI, IQR, noise flag and growth exponent on samples with known answers.

The CI of the median comes from SciPy; these tests check it against published order-statistic tables and
against its coverage on simulated right-skewed samples, not against the formula it is computed with.
"""

from __future__ import annotations

import numpy as np
import pytest

from equiv_core.bench.statistics import growth_exponent, median_ci, summarize


@pytest.mark.parametrize(
    ("n", "ranks"),
    # 1-based order statistics bounding the median with >= 95% confidence (Conover, Practical Nonparametric
    # Statistics, 3rd ed., Table A3; e.g. n = 10: x(2)..x(9), coverage 97.9%).
    [(6, (1, 6)), (10, (2, 9)), (11, (2, 10)), (20, (6, 15)), (50, (18, 33))],
)
def test_median_ci_is_the_tabulated_order_statistic_interval(n: int, ranks: tuple[int, int]) -> None:
    samples = [float(value) for value in np.random.default_rng(n).permutation(np.arange(1, n + 1))]
    assert median_ci(samples) == (float(ranks[0]), float(ranks[1]))


@pytest.mark.parametrize("n", [10, 20])
def test_median_ci_covers_the_true_median_at_least_95_percent_of_the_time(n: int) -> None:
    """Lognormal samples (right-skewed, like timings) with a known median of 1.0."""
    rng = np.random.default_rng(2026)
    draws = rng.lognormal(mean=0.0, sigma=0.5, size=(1000, n))
    covered = sum(low <= 1.0 <= high for low, high in (median_ci(list(row)) for row in draws))
    assert covered / len(draws) >= 0.95


def test_median_ci_of_fewer_than_six_samples_is_the_full_range() -> None:
    assert median_ci([3.0, 1.0, 2.0, 5.0, 4.0]) == (1.0, 5.0)


def test_summarize_known_samples() -> None:
    stats = summarize([float(value) for value in range(10, 0, -1)])
    assert (stats.n, stats.median_s, stats.min_s) == (10, 5.5, 1.0)
    assert stats.iqr_s == pytest.approx(4.5)  # numpy's linear interpolation: q75 7.75 - q25 3.25
    assert (stats.ci95_low_s, stats.ci95_high_s) == (2.0, 9.0)


def test_iqr_over_ten_percent_of_the_median_is_noisy() -> None:
    assert summarize([float(value) for value in range(1, 11)]).noisy


def test_tight_samples_are_not_noisy() -> None:
    assert not summarize([1.0, 1.01, 0.99, 1.0, 1.02, 0.98]).noisy


def test_growth_exponent_recovers_linear_and_quadratic() -> None:
    sizes = [8, 16, 32, 64]
    assert growth_exponent(sizes, [0.1 * size for size in sizes]) == pytest.approx(1.0)
    assert growth_exponent(sizes, [0.01 * size**2 for size in sizes]) == pytest.approx(2.0)


def test_growth_exponent_needs_two_sizes() -> None:
    assert growth_exponent([8], [1.0]) is None


def test_no_samples_is_an_error() -> None:
    with pytest.raises(ValueError, match="no timing samples"):
        summarize([])
