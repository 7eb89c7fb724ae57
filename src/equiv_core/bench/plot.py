"""The sweep plot: median seconds against new tokens, log-log, one line per arm, the median's 95% CI as error
bars, growth exponents (or "not measurable") in the legend."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402

from equiv_core.bench.sweep import BenchReport  # noqa: E402


def plot_sweep(report: BenchReport, path: Path) -> Path:
    """Draw the sweep to ``path`` (PNG) and return it. Growth exponents are in the legend."""
    exponents = report.growth_exponents()
    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=120)
    for arm in report.config.arms:
        cells = sorted((r for r in report.results if r.arm == arm), key=lambda r: r.new_tokens)
        sizes = [cell.new_tokens for cell in cells]
        medians = [cell.stats.median_s for cell in cells]
        errors = [
            [cell.stats.median_s - cell.stats.ci95_low_s for cell in cells],
            [cell.stats.ci95_high_s - cell.stats.median_s for cell in cells],
        ]
        exponent = exponents[arm]
        label = f"{arm} (slope {exponent.describe()})" if exponent.measurable else f"{arm} (slope not measurable)"
        axes.errorbar(sizes, medians, yerr=errors, marker="o", capsize=3, label=label)
    axes.set_xscale("log", base=2)
    sizes_seen = sorted({cell.new_tokens for cell in report.results})
    axes.set_xticks(sizes_seen, [str(size) for size in sizes_seen])
    axes.minorticks_off()
    axes.set_yscale("log")
    axes.set_xlabel("new tokens")
    axes.set_ylabel("median seconds per generation")
    environment = report.environment
    device = environment.get("gpu_name") or environment.get("device")
    busy = " (machine busy: not reliable)" if report.load.busy else ""
    axes.set_title(f"{report.config.model}, {report.config.dtype} on {device}: cost of steering{busy}", fontsize=10)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
