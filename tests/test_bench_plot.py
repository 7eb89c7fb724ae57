"""The sweep's table and plot from a report built by hand: what the CI column, the memory column and the error
bars say about themselves, and the panel of ratios to the hook. No model runs here."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from bench_helpers import bench_report
from matplotlib.container import ErrorbarContainer

from equiv_core.bench.budget import plan_timing
from equiv_core.bench.plot import plot_sweep, sweep_figure
from equiv_core.bench.results import ArmResult, BenchReport
from equiv_core.bench.statistics import summarize, summarize_ratios
from equiv_core.bench.table import render_table
from equiv_core.bench.timer import Measurement
from equiv_core.config.bench import BenchConfig

ARMS = ("plain", "hook", "unsteered")
FACTORS = {"plain": 1.1, "hook": 1.0, "unsteered": 0.9}


def _cell(arm: str, new_tokens: int, rounds: int) -> ArmResult:
    """``rounds`` rounds of ``FACTORS[arm]`` x 10 ms per token, each 1% apart, paired with the hook's."""
    walls = [FACTORS[arm] * 0.01 * new_tokens * (1 + 0.01 * index) for index in range(rounds)]
    hook = [0.01 * new_tokens * (1 + 0.01 * index) for index in range(rounds)]
    paired = None if arm == "hook" else summarize_ratios([w / h for w, h in zip(walls, hook, strict=True)])
    return ArmResult(
        arm,
        new_tokens,
        summarize(walls),
        tuple(Measurement(wall, wall, 0) for wall in walls),
        0.02,
        (1,) * new_tokens,
        "0" * 64,
        None,
        None,
        None,
        0,
        paired_to_hook=paired,
    )


def _report(rounds: int, **extra: object) -> BenchReport:
    config = BenchConfig(model="tiny-gpt2", arms=ARMS, new_tokens=(8, 32), rounds=rounds)
    results = tuple(_cell(arm, size, rounds) for size in (1, 8, 32) for arm in ARMS)
    return bench_report(config, results, **extra)


def test_the_table_labels_a_three_round_ci_as_a_75_percent_range() -> None:
    row = next(line for line in render_table(_report(3)).splitlines() if line.startswith("plain"))
    assert "range 75%" in row


def test_the_table_labels_a_six_round_ci_with_its_real_level() -> None:
    row = next(line for line in render_table(_report(6)).splitlines() if line.startswith("plain"))
    assert "96.8%" in row and "range" not in row


def test_the_tables_memory_header_says_it_is_growth_and_the_footer_why_it_can_be_zero() -> None:
    table = render_table(_report(6))
    assert "peak growth MiB" in table.splitlines()[0]
    assert "over the resident size just before it" in table and "0.0 means the call fit in memory" in table


def test_the_table_says_what_the_budget_gave_up() -> None:
    plan = plan_timing((8, 32), seconds_per_token=1.0, remaining_s=100.0, rounds=6, warmup=1)
    table = render_table(_report(6, plans=(plan,), not_timed={32: "the budget"}))
    assert plan.describe() in table and "32 new tokens: not timed (the budget)" in table


def test_the_error_bars_are_captioned_with_their_level_and_rounds() -> None:
    time_axes, _ratio_axes = sweep_figure(_report(3)).axes
    assert time_axes.get_title() == "error bars: CI of the median (range 75%, n = 3 rounds per cell)"


def test_a_second_panel_draws_each_arms_ratio_to_the_hook_except_the_hooks_own() -> None:
    _time_axes, ratio_axes = sweep_figure(_report(6)).axes
    bars = [container for container in ratio_axes.containers if isinstance(container, ErrorbarContainer)]
    drawn = {container.get_label(): np.asarray(container.lines[0].get_ydata(), dtype=float) for container in bars}
    assert set(drawn) == {"plain", "unsteered"}
    assert np.allclose(drawn["plain"], [1.1, 1.1, 1.1])


def test_the_sweep_plot_is_written_as_a_png(tmp_path: Path) -> None:
    path = plot_sweep(_report(6), tmp_path / "sweep.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_ratio_axis_is_scaled_to_the_medians_not_to_a_busy_machines_widest_bar() -> None:
    """Ratios of 0.9-1.1 with one CI reaching 14x: the axis still shows the few percent the question is about."""
    report = _report(6)
    wide = dataclasses.replace(report.results[0].paired_to_hook, ci95_high=14.0)  # type: ignore[type-var]
    results = (dataclasses.replace(report.results[0], paired_to_hook=wide), *report.results[1:])
    _time_axes, ratio_axes = sweep_figure(dataclasses.replace(report, results=results)).axes
    low, high = ratio_axes.get_ylim()
    assert low <= 0.81 and 1.25 <= high < 1.3
