"""``equiv bench``: its options into a BenchConfig and the files it writes."""

from __future__ import annotations

import argparse

from equiv_core.cli.arguments import (
    AddCommand,
    add_declared_options,
    add_tracking_options,
    declared_values,
    tracking_options,
)
from equiv_core.config.bench import BenchConfig
from equiv_core.config.catalog import (
    DEFAULT_EXPERIMENT,
    DEFAULT_SWEEP_PLOT,
)
from equiv_core.support.walltime import CommandStart


def bench_command(arguments: argparse.Namespace, _started: CommandStart) -> int:
    from equiv_core.jobs.bench import BenchOutputs, bench_job

    config = BenchConfig(**declared_values(arguments, BenchConfig))
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
    add_declared_options(bench, BenchConfig)
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
