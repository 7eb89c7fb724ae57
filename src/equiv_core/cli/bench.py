"""``equiv bench``: its options into a BenchConfig and the files it writes."""

from __future__ import annotations

import argparse

from equiv_core.cli.options import AddCommand, add_model_options, add_tracking_options, csv, csv_ints, tracking_options
from equiv_core.config.catalog import (
    BENCH_ARMS,
    DEFAULT_BUDGET_S,
    DEFAULT_EXPERIMENT,
    DEFAULT_MAX_ROUNDS,
    DEFAULT_MIN_ROUNDS,
    DEFAULT_MODEL,
    DEFAULT_PROMPT,
    DEFAULT_SWEEP_PLOT,
    TARGET_CI_HALF_WIDTH,
)
from equiv_core.support.walltime import CommandStart


def bench_command(arguments: argparse.Namespace, _started: CommandStart) -> int:
    from equiv_core.config.bench import BenchConfig
    from equiv_core.jobs.bench import BenchOutputs, bench_job

    config = BenchConfig(
        model=arguments.model,
        device=arguments.device,
        dtype=arguments.dtype,
        arms=csv(arguments.arms),
        new_tokens=arguments.new_tokens,
        rounds=arguments.rounds,
        warmup=arguments.warmup,
        prompt=arguments.prompt,
        layer=arguments.layer,
        seed=arguments.seed,
        max_rounds=arguments.max_rounds,
        target=arguments.target_ci / 100,
        budget_s=arguments.budget_s,
    )
    outputs = BenchOutputs(
        json=arguments.json,
        plot=None if arguments.no_plot else arguments.plot,
        pytest_benchmark_json=arguments.pytest_benchmark_json,
        attach=tuple(arguments.attach),
    )
    return bench_job(
        config,
        outputs,
        arguments.with_findings,
        not arguments.no_progress,
        tracking_options(arguments),
    )


def add_parser(command: AddCommand) -> None:
    """``equiv bench`` and its options."""
    bench = command("bench", "time plain / iter0 / recompute against a raw hook and unsteered")
    add_model_options(
        bench, None, f"model (default: {DEFAULT_MODEL} on CPU, gpt2-small-random when CUDA is used)", DEFAULT_PROMPT
    )
    bench.add_argument(
        "--arms", default=",".join(BENCH_ARMS), help=f"comma-separated arms (default: all: {','.join(BENCH_ARMS)})"
    )
    bench.add_argument(
        "--new-tokens",
        type=csv_ints,
        default=None,
        help="comma-separated sweep of new tokens (default: 8,16,32 on CPU; 8,32,128,512 on GPU)",
    )
    bench.add_argument(
        "--rounds",
        type=int,
        default=DEFAULT_MIN_ROUNDS,
        help=f"at least this many timed rounds per cell (>= 1, default {DEFAULT_MIN_ROUNDS}: the fewest that give a "
        "95%% CI of the median); more are added until --target-ci or --budget-s",
    )
    bench.add_argument(
        "--max-rounds",
        type=int,
        default=DEFAULT_MAX_ROUNDS,
        help=f"at most this many timed rounds per cell (>= --rounds, default {DEFAULT_MAX_ROUNDS})",
    )
    bench.add_argument(
        "--target-ci",
        type=float,
        default=TARGET_CI_HALF_WIDTH * 100,
        metavar="PERCENT",
        help="stop adding rounds to a cell once its median's 95%% CI is within +-PERCENT of the median "
        f"(0 < PERCENT < 100, default {TARGET_CI_HALF_WIDTH:.0%})".replace("%)", "%%)"),
    )
    bench.add_argument(
        "--budget-s",
        type=float,
        default=DEFAULT_BUDGET_S,
        metavar="SECONDS",
        help=f"seconds of timing rounds for the whole sweep, shared by size (> 0, default {DEFAULT_BUDGET_S:.0f}); "
        "cells still short of the target are flagged with the CI they reached",
    )
    bench.add_argument("--warmup", type=int, default=1, help="untimed warm-up rounds per cell (default 1)")
    bench.add_argument("--layer", type=int, default=0, help="decoder layer edited (default 0; negatives from the end)")
    bench.add_argument("--json", default=None, metavar="PATH", help="write one record per (arm, new_tokens) here")
    bench.add_argument(
        "--plot", default=DEFAULT_SWEEP_PLOT, metavar="PATH", help=f"sweep plot PNG (default: {DEFAULT_SWEEP_PLOT})"
    )
    bench.add_argument("--no-plot", action="store_true", help="do not draw the sweep plot")
    bench.add_argument(
        "--pytest-benchmark-json",
        default=None,
        metavar="PATH",
        help="also write the sweep's rounds as a pytest-benchmark JSON file (read by `pytest-benchmark compare`), "
        "logged with the run",
    )
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    bench.add_argument(
        "--with-findings",
        action="store_true",
        help="first run the five findings on the same model (what `nox -s bench` does)",
    )
    bench.add_argument(
        "--attach",
        action="append",
        default=[],
        metavar="PATH",
        help="extra file to log as an artifact of the run; repeatable",
    )
    add_tracking_options(bench, DEFAULT_EXPERIMENT)
    bench.set_defaults(handler=bench_command)
