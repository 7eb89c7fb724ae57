"""Summary statistics of timing samples: median with a distribution-free 95% CI, IQR, min, noise flag."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

NOISY_IQR_OVER_MEDIAN = 0.10


@dataclass(frozen=True, slots=True)
class TimingStats:
    """Seconds per call over ``n`` timed rounds."""

    n: int
    median_s: float
    iqr_s: float
    min_s: float
    ci95_low_s: float
    ci95_high_s: float

    @property
    def noisy(self) -> bool:
        """IQR over median above 10%: the machine was busy, or the arm is unstable; rerun before trusting."""
        return self.median_s > 0 and self.iqr_s / self.median_s > NOISY_IQR_OVER_MEDIAN

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "noisy": self.noisy}


def median_ci_ranks(n: int, confidence: float = 0.95) -> tuple[int, int]:
    """0-based ranks (lo, hi) of sorted samples bounding the median with at least ``confidence``.

    Order-statistic interval from the Binomial(n, 1/2) distribution: no normality assumption, which timing
    samples (right-skewed) do not meet. With fewer than 6 samples no interval reaches 95%: the full range is
    returned, and its real coverage is lower.
    """
    ranks = (0, n - 1)
    for lower in range(1, n // 2 + 1):  # 1-based ranks lower and n + 1 - lower
        coverage = sum(math.comb(n, i) for i in range(lower, n + 1 - lower)) / 2**n
        if coverage < confidence:
            break
        ranks = (lower - 1, n - lower)
    return ranks


def summarize(samples: list[float]) -> TimingStats:
    """Median, IQR, min and the 95% CI of the median of one arm's timed rounds."""
    if not samples:
        raise ValueError("no timing samples")
    ordered = sorted(samples)
    low_rank, high_rank = median_ci_ranks(len(ordered))
    q25, median, q75 = np.percentile(ordered, [25, 50, 75])
    return TimingStats(
        n=len(ordered),
        median_s=float(median),
        iqr_s=float(q75 - q25),
        min_s=ordered[0],
        ci95_low_s=ordered[low_rank],
        ci95_high_s=ordered[high_rank],
    )


def growth_exponent(sizes: list[int], seconds: list[float]) -> float | None:
    """Slope of log(seconds) against log(size): ~1 for linear growth, ~2 for quadratic. None with < 2 sizes."""
    if len(sizes) < 2 or any(value <= 0 for value in seconds):
        return None
    slope, _intercept = np.polyfit(np.log(sizes), np.log(seconds), 1)
    return float(slope)
