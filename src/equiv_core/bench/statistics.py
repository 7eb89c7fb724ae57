"""Summary statistics of timing samples: median with a distribution-free 95% CI, IQR, min, noise flag."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

NOISY_IQR_OVER_MEDIAN = 0.10
MEDIAN_CI_CONFIDENCE = 0.95


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


def median_ci(samples: list[float], confidence: float = MEDIAN_CI_CONFIDENCE) -> tuple[float, float]:
    """The order-statistic confidence interval of the median, in seconds.

    From ``scipy.stats.quantile_test`` (Binomial(n, 1/2) order statistics): no normality assumption, which timing
    samples (right-skewed) do not meet. With fewer than 6 samples no interval reaches 95%: the full range is
    returned, and its real coverage is lower.
    """
    from scipy import stats  # imported here: scipy costs ~0.3 s, and only timing needs it

    ordered = sorted(samples)
    interval = stats.quantile_test(ordered, q=ordered[len(ordered) // 2], p=0.5).confidence_interval(confidence)
    low, high = float(interval.low), float(interval.high)
    if math.isnan(low) or math.isnan(high):
        return ordered[0], ordered[-1]
    return low, high


def summarize(samples: list[float]) -> TimingStats:
    """Median, IQR, min and the 95% CI of the median of one arm's timed rounds."""
    if not samples:
        raise ValueError("no timing samples")
    ordered = sorted(samples)
    q25, median, q75 = np.percentile(ordered, [25, 50, 75])
    low, high = median_ci(ordered)
    return TimingStats(
        n=len(ordered),
        median_s=float(median),
        iqr_s=float(q75 - q25),
        min_s=ordered[0],
        ci95_low_s=low,
        ci95_high_s=high,
    )


def growth_exponent(sizes: list[int], seconds: list[float]) -> float | None:
    """Slope of log(seconds) against log(size): ~1 for linear growth, ~2 for quadratic. None with < 2 sizes."""
    if len(sizes) < 2 or any(value <= 0 for value in seconds):
        return None
    slope, _intercept = np.polyfit(np.log(sizes), np.log(seconds), 1)
    return float(slope)
