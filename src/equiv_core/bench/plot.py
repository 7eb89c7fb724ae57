"""The sweep plot: median seconds against new tokens, log-log, one line per arm, growth exponents (or "not
measurable") in the legend; below it each arm's paired time ratio to the hook. Error bars are the median's
order-statistic CI, captioned with its real level and the rounds behind it (3 rounds give a 75% range, not a 95%
CI)."""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure  # the Figure API: no pyplot state, no backend to choose (files only)

from equiv_core.bench.results import BenchReport
from equiv_core.bench.statistics import RatioStats, TimingStats, ci_label, median_ci_level


def _error_bars(stats: list[TimingStats] | list[RatioStats]) -> list[list[float]]:
    """Distances below and above each median to its CI's ends (matplotlib's ``yerr`` layout)."""
    bounds = [cell.bounds for cell in stats]
    return [[median - low for median, low, _high in bounds], [high - median for median, _low, high in bounds]]


def _levels(stats: list[TimingStats] | list[RatioStats]) -> str:
    """What the error bars are, for a caption: the CIs' real levels (lowest to highest; the level depends on n, not
    monotonically) and the rounds behind them, e.g. ``96.0% to 99.2%, n = 6-9``; a range below 95% is named as
    one (``range 75% to 96.8%, n = 3-6``)."""
    counts = sorted({cell.n for cell in stats})
    by_level = sorted(counts, key=median_ci_level)
    labels = list(dict.fromkeys((ci_label(by_level[0]), ci_label(by_level[-1]))))
    n_text = f"n = {counts[0]}" if len(counts) == 1 else f"n = {counts[0]}-{counts[-1]}"
    return f"{' to '.join(labels)}, {n_text}"


def plot_sweep(report: BenchReport, path: Path) -> Path:
    """Draw :func:`sweep_figure` to ``path`` (PNG) and return it."""
    figure = sweep_figure(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def sweep_figure(report: BenchReport) -> Figure:
    """The sweep as a figure of two panels: above, median seconds per arm against new tokens
    (log-log, growth exponents in the legend); below, each arm's paired time ratio to the hook (the question the
    benchmark asks: what nnsight adds over a raw hook), on a linear axis where a 5% difference is visible. Every
    error bar is the median's order-statistic CI; the captions say its real level and the rounds behind it."""
    exponents = report.growth_exponents()
    figure = Figure(figsize=(7.5, 8), dpi=120)
    time_axes, ratio_axes = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    colors = {arm: f"C{index}" for index, arm in enumerate(report.config.arms)}
    timed: list[TimingStats] = []
    paired: list[RatioStats] = []
    for arm in report.config.arms:
        cells = sorted((r for r in report.results if r.arm == arm), key=lambda r: r.new_tokens)
        if not cells:
            continue
        stats = [cell.stats for cell in cells]
        timed.extend(stats)
        exponent = exponents[arm]
        label = f"{arm} (slope {exponent.describe()})" if exponent.measurable else f"{arm} (slope not measurable)"
        sizes = [cell.new_tokens for cell in cells]
        medians = [cell.median_s for cell in stats]
        time_axes.errorbar(
            sizes, medians, yerr=_error_bars(stats), marker="o", capsize=3, label=label, color=colors[arm]
        )
        ratios = [(cell.new_tokens, cell.paired_to_hook) for cell in cells if cell.paired_to_hook is not None]
        if ratios:
            ratio_stats = [ratio for _size, ratio in ratios]
            paired.extend(ratio_stats)
            ratio_axes.errorbar(
                [size for size, _ratio in ratios],
                [ratio.median for ratio in ratio_stats],
                yerr=_error_bars(ratio_stats),
                marker="o",
                capsize=3,
                label=arm,
                color=colors[arm],
            )
    sizes_seen = sorted({cell.new_tokens for cell in report.results})
    time_axes.set_xscale("log", base=2)
    time_axes.set_yscale("log")
    time_axes.set_ylabel("median seconds per generation")
    time_axes.grid(True, which="both", alpha=0.3)
    time_axes.legend(fontsize=8)
    if timed:
        time_axes.set_title(f"error bars: CI of the median ({_levels(timed)} rounds per cell)", fontsize=8)
    ratio_axes.axhline(1.0, color="black", linewidth=1, label="hook (1.00x)")
    ratio_axes.set_ylabel("time / hook (paired per round)")
    ratio_axes.set_xlabel("new tokens")
    ratio_axes.grid(True, which="both", alpha=0.3)
    ratio_axes.legend(fontsize=8, ncol=3)
    caption = f"\nerror bars: CI of the median ratio ({_levels(paired)} paired rounds)" if paired else ""
    ratio_axes.set_title(f"each arm's time over the hook's in the same round{caption}", fontsize=8)
    if paired:
        # The question is a few percent around 1.00x: scale the axis to the medians, not to the widest bar of a
        # busy machine (bars that reach past it are cut at the edge, and the caption says they are CIs).
        medians = [ratio.median for ratio in paired]
        ratio_axes.set_ylim(min(0.8, min(medians) * 0.9), max(1.25, max(medians) * 1.15))
    ratio_axes.set_xticks(sizes_seen, [str(size) for size in sizes_seen])
    ratio_axes.minorticks_off()
    device = report.environment.gpu_name or report.environment.device
    busy = " (machine busy: not reliable)" if report.load.busy else ""
    figure.suptitle(f"{report.config.model}, {report.config.dtype} on {device}: cost of steering{busy}", fontsize=10)
    figure.tight_layout()
    return figure
