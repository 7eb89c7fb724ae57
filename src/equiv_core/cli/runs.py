"""``equiv compare`` and ``equiv runs``: the runs in the tracking store."""

from __future__ import annotations

import argparse

from equiv_core.cli.arguments import AddCommand, add_tracking_options, tracking_options
from equiv_core.config.catalog import DEFAULT_EXPERIMENT
from equiv_core.support.errors import UserInputError
from equiv_core.support.walltime import CommandStart


def compare_command(arguments: argparse.Namespace, _started: CommandStart) -> int:
    from equiv_core.jobs.runs import compare_job

    return compare_job(arguments.run_ids, tracking_options(arguments))


def runs_command(arguments: argparse.Namespace, _started: CommandStart) -> int:
    from equiv_core.jobs.runs import runs_job

    if arguments.limit < 1:
        raise UserInputError(f"--limit {arguments.limit} out of range; valid: >= 1")
    return runs_job(arguments.gc, arguments.upload, arguments.limit, tracking_options(arguments))


def add_parsers(command: AddCommand) -> None:
    """``equiv compare`` and ``equiv runs`` and their options."""
    compare = command("compare", "MLflow runs side by side: verdicts, ratios, identical hashes")
    compare.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="parent run ids (default: the newest two)")
    add_tracking_options(compare, DEFAULT_EXPERIMENT, off_switch=False)
    compare.set_defaults(handler=compare_command)

    runs = command("runs", "list runs with their status; end orphaned runs (--gc); upload a spooled run (--upload)")
    runs.add_argument("--limit", type=int, default=20, help="top-level runs to list, newest first (default 20)")
    runs.add_argument(
        "--gc", action="store_true", help="mark RUNNING runs whose process is gone FAILED, with the reason"
    )
    runs.add_argument(
        "--upload",
        metavar="DIR",
        help="upload a run spooled when the tracking store failed mid-run (to its store, or --tracking-uri)",
    )
    add_tracking_options(runs, DEFAULT_EXPERIMENT, off_switch=False)
    runs.set_defaults(handler=runs_command)
