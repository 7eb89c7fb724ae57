"""``equiv conformance-cell`` and ``equiv conformance-report``: the steering-library conformance matrix's two
commands (``nox -s conformance`` runs them, one environment per library)."""

from __future__ import annotations

import argparse
from pathlib import Path

from equiv_core.cli.arguments import AddCommand, add_tracking_options, tracking_options
from equiv_core.config.catalog import CONFORMANCE_EXPERIMENT
from equiv_core.config.options import csv
from equiv_core.conformance.intents import Intent
from equiv_core.conformance.matrix import ENVIRONMENTS, MODELS, environment
from equiv_core.support.errors import UserInputError
from equiv_core.support.walltime import CommandStart


def conformance_cell_command(arguments: argparse.Namespace, _started: CommandStart) -> int:
    from equiv_core.jobs.conformance import conformance_cell_job

    try:
        chosen = environment(arguments.environment)
    except ValueError as error:
        raise UserInputError(f"--environment: {error}") from None
    models = csv(arguments.models)
    unknown = [model for model in models if model not in MODELS]
    if unknown or not models:
        raise UserInputError(f"--models {arguments.models!r}: valid: a comma-separated subset of {', '.join(MODELS)}")
    names = csv(arguments.intents)
    valid = [str(intent) for intent in Intent]
    if not names or any(name not in valid for name in names):
        raise UserInputError(f"--intents {arguments.intents!r}: valid: a comma-separated subset of {', '.join(valid)}")
    intents = tuple(Intent(name) for name in names)
    return conformance_cell_job(chosen, models, intents, Path(arguments.out), tracking_options(arguments))


def conformance_report_command(arguments: argparse.Namespace, _started: CommandStart) -> int:
    from equiv_core.jobs.conformance import conformance_report_job

    readme = Path(arguments.readme) if arguments.readme else None
    if readme is not None and not readme.is_file():
        raise UserInputError(f"--readme {arguments.readme!r}: no such file")
    snapshot = Path(arguments.snapshot) if arguments.snapshot else None
    if snapshot is not None and not snapshot.is_dir():
        raise UserInputError(f"--snapshot {arguments.snapshot!r}: no such directory")
    return conformance_report_job(Path(arguments.results), readme, snapshot, tracking_options(arguments))


def add_parsers(command: AddCommand) -> None:
    """``equiv conformance-cell`` and ``equiv conformance-report`` and their options."""
    cell = command(
        "conformance-cell", "(used by `nox -s conformance`) run one steering library's cells in this environment"
    )
    cell.add_argument(
        "--environment", required=True, help=f"one of {', '.join(e.id for e in ENVIRONMENTS)} (its library installed)"
    )
    cell.add_argument("--models", default=",".join(MODELS), help="comma-separated models (default: all three)")
    cell.add_argument(
        "--intents", default=",".join(Intent), help="comma-separated intents (default: all: " + ", ".join(Intent) + ")"
    )
    cell.add_argument("--out", default="results/conformance", help="directory for <environment>.json")
    add_tracking_options(cell, CONFORMANCE_EXPERIMENT)
    cell.set_defaults(handler=conformance_cell_command)

    report = command("conformance-report", "the conformance table and conformance-status.json of every environment")
    report.add_argument("--results", default="results/conformance", help="directory of environment records")
    report.add_argument("--readme", default=None, help="also write the table into this README, between its markers")
    report.add_argument(
        "--snapshot", default=None, help="also copy the table and status file here (CONFORMANCE.md, committed)"
    )
    add_tracking_options(report, CONFORMANCE_EXPERIMENT)
    report.set_defaults(handler=conformance_report_command)
