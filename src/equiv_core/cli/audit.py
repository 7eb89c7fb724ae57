"""``equiv audit-cell`` and ``equiv audit-report``: the version audit's two commands (``nox -s audit`` runs them)."""

from __future__ import annotations

import argparse
from pathlib import Path

from equiv_core.audit.matrix import AUDITED, REFERENCE_CELL, is_cell_id, is_source
from equiv_core.cli.arguments import AddCommand, add_tracking_options, tracking_options
from equiv_core.config.catalog import AUDIT_EXPERIMENT
from equiv_core.config.options import csv
from equiv_core.support.errors import UserInputError
from equiv_core.support.walltime import CommandStart


def audit_cell_command(arguments: argparse.Namespace, _started: CommandStart) -> int:
    from equiv_core.jobs.audit import audit_cell_job

    if not is_cell_id(arguments.cell):
        raise UserInputError(
            f"--cell {arguments.cell!r}: valid: PACKAGE='VERSION' or PACKAGE='latest', PACKAGE one of "
            f"{', '.join(AUDITED)} (e.g. nnsight='0.7.0')"
        )
    if not is_source(arguments.source):
        raise UserInputError(
            f"--source {arguments.source!r}: valid: matrix, or bisect-PACKAGE / sweep-PACKAGE with PACKAGE one of "
            f"{', '.join(AUDITED)}"
        )
    pins: dict[str, str | None] = {}
    for value in arguments.pin:
        package, sep, version = value.partition("=")
        if not sep or not package:
            raise UserInputError(f"--pin takes PACKAGE=VERSION (or PACKAGE=latest), got {value!r}")
        pins[package] = None if version in ("", "latest") else version
    out = Path(arguments.out)
    return audit_cell_job(
        arguments.cell, csv(arguments.models), out, tracking_options(arguments), pins, arguments.source
    )


def audit_report_command(arguments: argparse.Namespace, _started: CommandStart) -> int:
    from equiv_core.jobs.audit import audit_report_job

    from_store = arguments.tracking_uri is not None  # cells run elsewhere against one server: read them from it
    return audit_report_job(Path(arguments.results), arguments.reference, tracking_options(arguments), from_store)


def add_parsers(command: AddCommand) -> None:
    """``equiv audit-cell`` and ``equiv audit-report`` and their options."""
    audit_cell = command("audit-cell", "(used by `nox -s audit`) audit this environment")
    audit_cell.add_argument("--cell", required=True, help="cell id, e.g. \"nnsight='0.7.0'\"")
    audit_cell.add_argument("--models", default="smollm2-135m,tiny-gpt2", help="comma-separated models")
    audit_cell.add_argument("--out", default="results/audit", help="directory for <cell>.json and <cell>.npz")
    audit_cell.add_argument(
        "--pin", action="append", default=[], help="PACKAGE=VERSION the cell asked for (recorded), repeatable"
    )
    audit_cell.add_argument(
        "--source", default="matrix", help="matrix, or the release search the cell is a probe of (e.g. bisect-nnsight)"
    )
    add_tracking_options(audit_cell, AUDIT_EXPERIMENT)
    audit_cell.set_defaults(handler=audit_cell_command)

    audit_report = command("audit-report", "Markdown report + MLflow table of all audit cells")
    audit_report.add_argument("--results", default="results/audit", help="directory of cell results")
    audit_report.add_argument("--reference", default=REFERENCE_CELL, help="cell the others are compared with")
    add_tracking_options(audit_report, AUDIT_EXPERIMENT)
    audit_report.set_defaults(handler=audit_report_command)
