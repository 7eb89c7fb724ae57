"""``equiv matrix``: every cell of the audit or conformance matrix as a Ray task in its own environment, logged to one
tracking server, then the report (README "Running the matrix on a Ray cluster")."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import equiv_core
from equiv_core.audit.bisect import RELEASES, search_source
from equiv_core.audit.matrix import REFERENCE_CELL, SWEEP_FROM, cell_id, sweep_versions
from equiv_core.audit.record import cell_slug
from equiv_core.cells.cell import (
    EXPERIMENTS,
    BenchSetting,
    Cell,
    CellKind,
    NotRun,
    matrix,
    pinned_versions,
    sweep_cells,
    too_old,
)
from equiv_core.cells.runner import available_releases
from equiv_core.config.tracking import TrackingOptions
from equiv_core.jobs.common import open_tracker
from equiv_core.support.errors import EnvironmentFault, ExitStatus, UserInputError, first_line
from equiv_core.support.outputs import write_text
from equiv_core.support.progress import say

if TYPE_CHECKING:
    from equiv_core.cells.ray_engine import TaskResult
    from equiv_core.tracking.store import Tracker

PROJECT = Path(equiv_core.__file__).parent  # the package shipped to every node: this checkout's code
CONSTRAINTS = PROJECT.parent.parent / "constraints.txt"


@dataclass(frozen=True, slots=True)
class MatrixOptions:
    """``equiv matrix``'s options, checked: ``address`` None starts a local Ray in this process; ``cells`` empty is
    every cell; ``models`` empty is the matrix's default; ``threads`` per cell process; ``bench`` what each bench
    cell times (the bench matrix only); ``sweep`` a package whose releases are the cells instead (audit only)."""

    kind: CellKind
    address: str | None
    tracking_uri: str
    cells: tuple[str, ...]
    models: tuple[str, ...]
    results: Path
    max_running: int
    threads: int
    bench: tuple[BenchSetting, ...]
    sweep: str | None = None  # the package whose every release is a cell (the audit's release sweep)


def default_pins() -> dict[str, str]:
    """The default environment's pins of the audited packages (this checkout's constraints.txt)."""
    if not CONSTRAINTS.is_file():
        raise EnvironmentFault(
            f"equiv matrix runs from a checkout of equiv-bench: no {CONSTRAINTS} (the default environment's pins)"
        )
    return pinned_versions(CONSTRAINTS)


def matrix_cells(options: MatrixOptions) -> list[Cell]:
    """The cells to run: bad cell ids are bad input (exit 2), before Ray or a model is loaded."""
    try:
        return matrix(options.kind, default_pins(), options.models, options.cells, options.bench)
    except ValueError as error:
        raise UserInputError(f"--cells: {error}") from None


def sweep_cells_to_run(package: str, directory: Path) -> tuple[list[str], list[Cell]]:
    """The releases of ``package`` the sweep covers (from the package index) and the cells to run: a release older
    than the harness supports is recorded as unsupported in ``directory`` without building anything."""
    try:
        versions = sweep_versions(package, available_releases(Path(sys.executable), package, os.environ))
    except ValueError as error:
        raise EnvironmentFault(str(error)) from None
    if not versions:
        raise EnvironmentFault(f"no {package} releases from {SWEEP_FROM[package]} on the package index")
    to_run = []
    for cell in sweep_cells(package, versions, default_pins()):
        reason = too_old(package, cell.pins[package] or "")
        if reason:
            cell.record_not_run(NotRun.UNSUPPORTED, reason, directory)
        else:
            to_run.append(cell)
    return versions, to_run


def matrix_job(options: MatrixOptions) -> int:
    """Run the cells on Ray, write each record into ``options.results`` as it arrives, end the runs a dead or
    cancelled task left RUNNING, log the cells that could not run, then build the report (the audit's from the
    tracking server, the conformance table from the records, a release sweep's changes from its cells)."""
    cells = matrix_cells(options) if options.sweep is None else []  # bad cells: exit 2 before anything else
    try:
        from equiv_core.cells.ray_engine import Outcome, RayEngine
    except ImportError as error:
        raise EnvironmentFault(
            f"Ray is not installed here ({error}): pip install 'equiv-bench[cluster]' (README, Ray cluster)"
        ) from None
    try:
        tracker = open_tracker(TrackingOptions(uri=options.tracking_uri, experiment=EXPERIMENTS[options.kind]))
    except UserInputError:  # its line suggests --no-mlflow, which equiv matrix has not: every cell logs there
        raise UserInputError(
            f"--tracking-uri {options.tracking_uri}: cannot reach that MLflow tracking store (start the server, or fix "
            "the URI); every cell logs there and the report is built from it"
        ) from None
    versions: list[str] = []
    directory = options.results
    if options.sweep is not None:  # the package index is asked only once Ray and the store are known to be there
        directory = options.results / RELEASES / search_source("sweep", options.sweep)
        versions, cells = sweep_cells_to_run(options.sweep, directory)
    options.results.mkdir(parents=True, exist_ok=True)
    matrix_run = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    say(f"matrix run {matrix_run}: {len(cells)} {options.kind} cell(s) on Ray, logging to {tracker.uri}")

    def on_gone(cell: Cell, task: str, reason: str) -> None:
        try:
            ended = tracker.end_task_runs(task, "KILLED", reason)
        except Exception as error:  # noqa: BLE001 - the store failing here must not stop the other cells
            say(f"{cell.id}: could not end its runs on {tracker.uri} ({first_line(error)}); `equiv runs --gc` will")
            return
        if ended:
            say(f"{cell.id}: ended its run(s) {', '.join(ended)} KILLED ({reason})")

    def on_result(result: TaskResult) -> None:
        _keep(result, directory)

    engine = RayEngine(options.address, PROJECT, say)
    try:
        engine.check_fits(cells, options.threads)
        results = engine.run(cells, matrix_run, tracker.uri, options.max_running, options.threads, on_gone, on_result)
    finally:
        engine.shutdown()
    failed = [result for result in results if result.outcome != Outcome.RAN]
    say(f"matrix run {matrix_run}: {len(results) - len(failed)} of {len(cells)} cell(s) ran")
    if options.sweep is not None:
        seconds = {result.cell.pins[options.sweep] or "": result.seconds for result in results}
        return sweep_report(options.sweep, versions, directory, seconds, options.results)
    return _report(options, tracker, cells)


def sweep_report(
    package: str, versions: list[str], directory: Path, seconds: dict[str, float], audit_results: Path
) -> int:
    """The sweep's search record (every release's observables compared with the next's, as `nox -s audit_sweep`
    writes it) from the cells' records in ``directory``, written into ``audit_results``; its changes said.
    ``seconds``: each release that ran, its cell's time (environment included); the others were refused up front."""
    from equiv_core.audit.bisect import Probe, search
    from equiv_core.audit.record import CellRecord, CellStatus

    def probe(version: str) -> Probe:
        record = CellRecord.read(directory / f"{cell_slug(cell_id(package, version))}.json")
        if version not in seconds:  # refused up front: nothing was built
            return Probe(version, CellStatus.UNSUPPORTED, record.reason, {}, 0.0, built=False)
        return Probe.of_cell(version, record, seconds[version])

    found = search(package, versions, probe, "sweep")
    path = found.write(audit_results / RELEASES / f"{found.source}.json")
    say(f"{len(versions)} {package} releases, {found.environments} environments: {path}")
    for change in found.changes:
        say(change.sentence(package))
    say(f"`equiv audit-report --results {audit_results}` puts it in the report")
    return ExitStatus.OK


def _keep(result: TaskResult, results: Path) -> None:
    """Write the cell's record (the one written on the node, else a not-run record) into ``results`` as soon as its
    task ends."""
    if result.record:
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
            path = options.results / f"{cell.slug}.json"
            status, reason = cell.outcome_of(path.read_text()) if path.is_file() else ("not run", "")
            what = "equiv bench's JSON; its run, plot included, on the server" if status == "ran" else reason
            say(f"{cell.id}: {status}: {path} ({what})")
        return ExitStatus.OK
    if options.kind == CellKind.AUDIT:
        from equiv_core.audit.record import CellRecord
        from equiv_core.jobs.audit import audit_report_job, log_unrun_cells

        records = [options.results / f"{cell.slug}.json" for cell in cells]
        log_unrun_cells(tracker, options.results, [CellRecord.read(path) for path in records if path.is_file()])
        return audit_report_job(options.results, REFERENCE_CELL, tracking, from_store=True)
    from equiv_core.jobs.conformance import conformance_report_job

    return conformance_report_job(options.results, None, None, tracking)
