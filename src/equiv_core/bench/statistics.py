"""Summary statistics of timing samples: median with a distribution-free 95% CI, its relative width against the
target, IQR, and growth exponents with a bootstrap confidence interval.

Why these: timing samples are right-skewed and, on a shared machine, contaminated by other processes, so the
median (not the mean) is reported, with the order-statistic CI of the median (no normality assumption), and a
cell is trusted only when that CI is narrow (pyperf and torch.utils.benchmark judge stability the same way: by
spread around a robust centre, not by a wall-clock threshold).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from equiv_core.config.catalog import TARGET_CI_HALF_WIDTH

MEDIAN_CI_CONFIDENCE = 0.95
EXPONENT_CI_MAX_WIDTH = 0.5
"""A growth exponent whose 95% CI is wider than this (e.g. 0.8-1.4) says nothing about linear vs quadratic."""
BOOTSTRAP_RESAMPLES = 2000


def relative_half_width(median: float, low: float, high: float) -> float:
    """The larger distance from ``median`` to a CI's end, as a fraction of the median (inf for a median <= 0)."""
    if median <= 0:
        return math.inf
    return max(median - low, high - median) / median


@dataclass(frozen=True, slots=True)
class TimingStats:
    """Seconds per call over ``n`` timed rounds. ``ci95_low_s`` / ``ci95_high_s`` (names kept for the JSON and
    MLflow keys) bound the median's order-statistic CI, whose real level is :attr:`ci_level`: 95% or more from 6
    rounds, less for fewer (the [min, max] range)."""

    n: int
    median_s: float
    iqr_s: float
    min_s: float
    ci95_low_s: float
    ci95_high_s: float

    @property
    def bounds(self) -> tuple[float, float, float]:
        """``(median, CI low, CI high)``, seconds."""
        return self.median_s, self.ci95_low_s, self.ci95_high_s

    @property
    def ci_half_width(self) -> float:
        """The CI's larger distance from the median, as a fraction of the median (0.02 = +-2%)."""
        return relative_half_width(*self.bounds)

    @property
    def ci_level(self) -> float:
        """The real confidence level of ``[ci95_low_s, ci95_high_s]`` for these ``n`` rounds (see
        :func:`median_ci_level`): at least 0.95 from 6 rounds, 0.75 for the [min, max] range of 3."""
        return median_ci_level(self.n)

    def meets(self, target: float = TARGET_CI_HALF_WIDTH) -> bool:
        """True when the CI of the median is a real 95% CI (>= 6 rounds) within +-``target`` of the median."""
        return self.ci_level >= MEDIAN_CI_CONFIDENCE and self.ci_half_width <= target

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ci_half_width": self.ci_half_width}


@dataclass(frozen=True, slots=True)
class RatioStats:
    """A dimensionless ratio over ``n`` paired rounds (e.g. an arm's time over the hook's in the same round): the
    median and the bounds of its order-statistic CI, whose real level is :attr:`ci_level`."""

    n: int
    median: float
    ci95_low: float
    ci95_high: float

    @property
    def bounds(self) -> tuple[float, float, float]:
        """``(median, CI low, CI high)``."""
        return self.median, self.ci95_low, self.ci95_high

    @property
    def ci_level(self) -> float:
        return median_ci_level(self.n)

    @property
    def ci_half_width(self) -> float:
        """The CI's larger distance from the median, as a fraction of the median."""
        return relative_half_width(*self.bounds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "median": self.median,
            "ci95_low": self.ci95_low,
            "ci95_high": self.ci95_high,
            "ci_level": self.ci_level,
            "n": self.n,
        }


def median_ci_ranks(n: int, confidence: float = MEDIAN_CI_CONFIDENCE) -> tuple[int, int]:
    """The 0-based ranks ``(low, high)`` of the order statistics that :func:`median_ci` returns for ``n`` samples.

    The same binomial quantiles as ``scipy.stats.quantile_test(...).confidence_interval`` (two-sided, p = 1/2;
    SciPy 1.17 ``_stats_py.py``); where no pair of ranks reaches ``confidence`` (fewer than 6 samples at 95%),
    the full range ``(0, n - 1)``, as :func:`median_ci` falls back to.
    """
    from scipy import stats

    if n < 1:
        raise ValueError("no timing samples")
    tail = (1 - confidence) / 2
    binomial = stats.binom(n, 0.5)
    low, high = int(binomial.ppf(tail)) - 1, int(binomial.isf(tail))
    return (low, high) if low >= 0 and high < n else (0, n - 1)


def median_ci_level(n: int, confidence: float = MEDIAN_CI_CONFIDENCE) -> float:
    """The real coverage of :func:`median_ci`'s interval of ``n`` samples: the probability that order statistics
    ``x[low] <= median <= x[high]`` (0-based ranks from :func:`median_ci_ranks`), i.e. that the count K of samples
    below the true median (K ~ Binomial(n, 1/2) for a continuous distribution) satisfies low < K <= high.

    At least ``confidence`` where a CI of that level exists; for the [min, max] range of fewer samples
    1 - 2^(1-n): 0.5 at 2, 0.75 at 3, 0.875 at 4, 0.9375 at 5 (and 0.0 for one sample, a point).
    """
    from scipy import stats

    low, high = median_ci_ranks(n, confidence)
    binomial = stats.binom(n, 0.5)
    return float(binomial.cdf(high) - binomial.cdf(low))


def ci_label(n: int, confidence: float = MEDIAN_CI_CONFIDENCE) -> str:
    """How to label the CI of the median of ``n`` rounds: its real level (rounded down to 0.1%), e.g.
    ``96.8%``, or ``range 75%`` where the rounds are too few for ``confidence`` and the interval is [min, max];
    ``no CI`` for a single round."""
    if n < 2:
        return "no CI"
    level = median_ci_level(n, confidence)
    text = f"{math.floor(level * 1000 + 1e-9) / 10:g}%"
    return text if level >= confidence else f"range {text}"


def median_ci(samples: list[float], confidence: float = MEDIAN_CI_CONFIDENCE) -> tuple[float, float]:
    """The order-statistic confidence interval of the median, in seconds.

    From ``scipy.stats.quantile_test`` (Binomial(n, 1/2) order statistics): no normality assumption, which timing
    samples (right-skewed) do not meet. With fewer than 6 samples no interval reaches 95%: the full range is
    returned, and its real coverage is lower (:func:`median_ci_level`; label it with :func:`ci_label`).
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


def summarize_ratios(ratios: list[float]) -> RatioStats:
    """The median of ``ratios`` with the 95% CI of the median (as :func:`summarize` gives for seconds)."""
    stats = summarize(ratios)
    return RatioStats(stats.n, stats.median_s, stats.ci95_low_s, stats.ci95_high_s)


def growth_exponent(sizes: list[int], seconds: list[float]) -> float | None:
    """Slope of log(seconds) against log(size): ~1 for linear growth, ~2 for quadratic. None with < 2 sizes."""
    if len(sizes) < 2 or any(value <= 0 for value in seconds):
        return None
    slope, _intercept = np.polyfit(np.log(sizes), np.log(seconds), 1)
    return float(slope)


@dataclass(frozen=True, slots=True)
class GrowthExponent:
    """The log-log slope of median time against new tokens, with its 95% bootstrap CI over rounds.

    ``measurable`` is False when the CI is wider than :data:`EXPONENT_CI_MAX_WIDTH` or the slope is negative
    (generating more tokens cannot take less time: a negative slope is noise), or when it could not be computed.
    """

    value: float | None
    ci95_low: float | None
    ci95_high: float | None
    unreliable: str | None = None  # why the rounds cannot support a slope, whatever its CI (e.g. a busy machine)

    @property
    def measurable(self) -> bool:
        if self.value is None or self.ci95_low is None or self.ci95_high is None or self.unreliable:
            return False
        return self.value >= 0 and self.ci95_high - self.ci95_low <= EXPONENT_CI_MAX_WIDTH

    def describe(self) -> str:
        """``1.02 [0.97, 1.08]``, or ``not measurable (...)`` saying why."""
        if self.value is None:
            return "not measurable (needs 2 sizes)"
        if self.ci95_low is None or self.ci95_high is None:
            return f"not measurable (slope {self.value:.2f} from single rounds: needs 2 rounds per size for a CI)"
        interval = f"95% CI {self.ci95_low:.2f} to {self.ci95_high:.2f}"
        if self.unreliable:
            return f"not measurable ({self.unreliable}; slope {self.value:.2f}, {interval})"
        if self.value < 0:
            return f"not measurable (noise: slope {self.value:.2f} < 0, {interval})"
        if not self.measurable:
            return f"not measurable (noise: {interval}, wider than {EXPONENT_CI_MAX_WIDTH})"
        return f"{self.value:.2f} [{self.ci95_low:.2f}, {self.ci95_high:.2f}]"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "measurable": self.measurable, "text": self.describe()}


MIN_ROUNDS_FOR_EXPONENT = 6  # as for a median's CI: with fewer rounds a size's median is itself unpinned


def growth_exponent_ci(
    sizes: list[int], samples: list[list[float]], seed: int = 0, busy: bool = False
) -> GrowthExponent:
    """The growth exponent of the medians, with a percentile bootstrap CI that resamples each size's rounds.

    ``samples[i]`` are the timed rounds (seconds) at ``sizes[i]``. Resampling uses ``scipy.stats.bootstrap``
    (independent samples, :data:`BOOTSTRAP_RESAMPLES` resamples, seeded: the same rounds give the same CI). The
    slope is not a result (``unreliable``) when the machine was ``busy`` or a size has fewer than
    :data:`MIN_ROUNDS_FOR_EXPONENT` rounds: a bootstrap of 3 rounds understates its own uncertainty.
    """
    from scipy import stats

    medians = [float(np.median(values)) for values in samples if values]
    value = growth_exponent(sizes, medians) if len(medians) == len(sizes) else None
    fewest = min((len(values) for values in samples), default=0)
    if value is None or fewest < 2:
        return GrowthExponent(value, None, None)
    unreliable = (
        "the machine was busy"
        if busy
        else f"{fewest} rounds at some size, {MIN_ROUNDS_FOR_EXPONENT} needed"
        if fewest < MIN_ROUNDS_FOR_EXPONENT
        else None
    )
    log_sizes = np.log(np.asarray(sizes, dtype=float))
    centred = log_sizes - log_sizes.mean()

    def slope(*resampled: np.ndarray, axis: int = -1) -> np.ndarray:
        log_medians = np.stack([np.log(np.median(values, axis=axis)) for values in resampled], axis=-1)
        return np.asarray((log_medians - log_medians.mean(axis=-1, keepdims=True)) @ centred / (centred @ centred))

    with warnings.catch_warnings():
        # Identical rounds (a perfectly quiet cell) make every resample equal: the CI is then the point itself.
        warnings.simplefilter("ignore", category=stats.DegenerateDataWarning)
        result = stats.bootstrap(
            tuple(np.asarray(values, dtype=float) for values in samples),
            slope,
            n_resamples=BOOTSTRAP_RESAMPLES,
            vectorized=True,
            paired=False,
            confidence_level=MEDIAN_CI_CONFIDENCE,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if math.isnan(low) or math.isnan(high):
        low = high = value
    return GrowthExponent(value, low, high, unreliable)
