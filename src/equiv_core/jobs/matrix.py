"""``equiv matrix``: every cell of the audit or conformance matrix as a Ray task in its own environment, logged to one
tracking server, then the report (README "Running the matrix on a Ray cluster")."""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import equiv_core
from equiv_core.audit.matrix import REFERENCE_CELL
from equiv_core.cells.cell import BenchSetting, Cell, CellKind, NotRun, matrix, pinned_versions
from equiv_core.config.catalog import AUDIT_EXPERIMENT, CONFORMANCE_EXPERIMENT, DEFAULT_EXPERIMENT
from equiv_core.config.tracking import TrackingOptions
from equiv_core.jobs.common import open_tracker
from equiv_core.support.errors import EnvironmentFault, ExitStatus, UserInputError
from equiv_core.support.outputs import write_text
from equiv_core.support.progress import say

if TYPE_CHECKING:
    from equiv_core.cells.ray_engine import TaskResult
    from equiv_core.tracking.store import Tracker

PROJECT = Path(equiv_core.__file__).parent  # the package shipped to every node: this checkout's code
CONSTRAINTS = PROJECT.parent.parent / "constraints.txt"
EXPERIMENTS = {
    CellKind.AUDIT: AUDIT_EXPERIMENT,
    CellKind.CONFORMANCE: CONFORMANCE_EXPERIMENT,
    CellKind.BENCH: DEFAULT_EXPERIMENT,
}


@dataclass(frozen=True, slots=True)
class MatrixOptions:
    """``equiv matrix``'s options, checked: ``address`` None starts a local Ray in this process; ``cells`` empty is
    every cell; ``models`` empty is the matrix's default; ``threads`` per cell process; ``bench`` what each bench
    cell times (the bench matrix only)."""

    kind: CellKind
    address: str | None
    tracking_uri: str
    cells: tuple[str, ...]
    models: tuple[str, ...]
    results: Path
    max_running: int
    threads: int
    bench: tuple[BenchSetting, ...]


def matrix_cells(options: MatrixOptions) -> list[Cell]:
    """The cells to run: bad cell ids are bad input (exit 2), before Ray or a model is loaded."""
    if not CONSTRAINTS.is_file():
        raise EnvironmentFault(
            f"equiv matrix runs from a checkout of equiv-bench: no {CONSTRAINTS} (the default environment's pins)"
        )
    try:
        return matrix(options.kind, pinned_versions(CONSTRAINTS), options.models, options.cells, options.bench)
    except ValueError as error:
        raise UserInputError(f"--cells: {error}") from None


def matrix_job(options: MatrixOptions) -> int:
    """Run the cells on Ray, write each record into ``options.results`` as it arrives, end the runs a dead or
    cancelled task left RUNNING, log the cells that could not run, then build the report (the audit's from the
    tracking server, the conformance table from the records)."""
    cells = matrix_cells(options)
    try:
        from equiv_core.cells.ray_engine import RayEngine
    except ImportError as error:
        raise EnvironmentFault(
            f"Ray is not installed here ({error}): pip install 'equiv-bench[cluster]' (README, Ray cluster)"
        ) from None
    tracker = open_tracker(TrackingOptions(uri=options.tracking_uri, experiment=EXPERIMENTS[options.kind]))
    options.results.mkdir(parents=True, exist_ok=True)
    matrix_run = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    say(f"matrix run {matrix_run}: {len(cells)} {options.kind} cell(s) on Ray, logging to {tracker.uri}")

    def on_gone(cell: Cell, task: str, reason: str) -> None:
        ended = tracker.end_task_runs(task, "KILLED", reason)
        if ended:
            say(f"{cell.id}: ended its run(s) {', '.join(ended)} KILLED ({reason})")

    def on_result(result: TaskResult) -> None:
        _keep(result, options.results)

    engine = RayEngine(options.address, PROJECT, say)
    try:
        results = engine.run(cells, matrix_run, tracker.uri, options.max_running, options.threads, on_gone, on_result)
    finally:
        engine.shutdown()
    failed = [result for result in results if result.outcome != "ran"]
    say(f"matrix run {matrix_run}: {len(results) - len(failed)} of {len(cells)} cell(s) ran")
    return _report(options, tracker, cells)


def _keep(result: TaskResult, results: Path) -> None:
    """Write the cell's record (or its not-run record) into ``results`` as soon as its task ends."""
    from equiv_core.cells.ray_engine import Outcome

    if result.outcome == Outcome.RAN:
        write_text(results / f"{result.cell.slug}.json", result.record)
        (results / f"{result.cell.slug}.npz").unlink(missing_ok=True)  # the audit's logits are on the server
    else:
        result.cell.record_not_run(NotRun(result.outcome.value), result.reason, results)


def _report(options: MatrixOptions, tracker: Tracker, cells: list[Cell]) -> int:
    """The audit report from the tracking server (cells that could not run are logged there first), the
    conformance table from the records in ``options.results``, or where each bench cell's JSON is."""
    tracking = TrackingOptions(uri=tracker.uri, experiment=tracker.experiment_name)
    if options.kind == CellKind.BENCH:
        for cell in cells:
            say(f"{cell.id}: {options.results / (cell.slug + '.json')} (equiv bench's JSON; its run on the server)")
        return ExitStatus.OK
    if options.kind == CellKind.AUDIT:
        from equiv_core.audit.record import CellRecord
        from equiv_core.jobs.audit import audit_report_job, log_unrun_cells

        records = [options.results / f"{cell.slug}.json" for cell in cells]
        log_unrun_cells(tracker, options.results, [CellRecord.read(path) for path in records if path.is_file()])
        return audit_report_job(options.results, REFERENCE_CELL, tracking, from_store=True)
    from equiv_core.jobs.conformance import conformance_report_job

    return conformance_report_job(options.results, None, None, tracking) or ExitStatus.OK
