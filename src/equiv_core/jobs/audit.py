"""``equiv audit-cell`` and ``equiv audit-report``: one cell of the version audit in this environment; the report
of all cells."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from equiv_core.audit.record import CellStatus
from equiv_core.config.tracking import TrackingOptions
from equiv_core.findings.verdict import Verdict
from equiv_core.jobs.common import open_tracker, settle
from equiv_core.support.errors import ExitStatus, UserInputError
from equiv_core.support.progress import say
from equiv_core.tracking.schema import PIN_SUFFIX, Param, RunKind, Tag

if TYPE_CHECKING:
    from equiv_core.audit.record import CellRecord
    from equiv_core.tracking.store import Tracker


def audit_cell_job(
    cell: str,
    models: tuple[str, ...],
    out: Path,
    tracking: TrackingOptions,
    pins: dict[str, str | None],
    source: str = "matrix",
) -> int:
    """``equiv audit-cell``: audit this environment; a finding that fails is a result, not a failed cell."""
    from equiv_core.audit.cell import run_cell

    tracker = open_tracker(tracking)
    record = run_cell(cell, models, out, tracker, say, pins, source)
    failing = [
        f"{model}/{finding}"
        for model, result in record.models.items()
        for finding, verdict in result.findings.items()
        if verdict.verdict != Verdict.PASS
    ]
    say(f"cell {cell}: {'all findings PASS' if not failing else 'not PASS: ' + ', '.join(failing)}")
    return settle(tracker, None, ExitStatus.OK)


def audit_report_job(results: Path, reference: str, tracking: TrackingOptions, from_store: bool = False) -> int:
    """``equiv audit-report``: the Markdown report and status.json of every cell, logged with its table.

    ``from_store``: first fetch every cell's newest run from the tracking store's audit experiment into ``results``
    (cells run on other machines against one server); else the cell files already in ``results``."""
    from equiv_core.audit.record import read_cells
    from equiv_core.audit.report import write_report
    from equiv_core.tracking.store import NullTracker

    tracker = open_tracker(tracking)
    if from_store:
        from equiv_core.audit.mlflow_source import download_cells

        if isinstance(tracker, NullTracker):
            raise UserInputError("--tracking-uri reads the cells from a tracking store; drop --no-mlflow")
        fetched = download_cells(tracker, results)
        say(f"read {len(fetched)} audit cells from {tracker.uri}, experiment {tracker.experiment_name!r}")
    try:
        cells = read_cells(results) if results.is_dir() else []
    except ValueError as error:
        raise UserInputError(f"{error}; re-run that cell, or remove the file") from None
    if not cells:
        where = f"the experiment {tracker.experiment_name!r} at {tracker.uri}" if from_store else repr(str(results))
        raise UserInputError(f"no audit cell results in {where}; run `.venv/bin/nox -s audit` first")
    if not from_store:
        log_unrun_cells(tracker, results, cells)
    path, rows = write_report(results, reference)
    with tracker.run("audit report", tags={Tag.KIND: RunKind.AUDIT_REPORT}) as run:
        run.log(params={"reference_cell": reference, "cells": len({row["cell"] for row in rows})})
        run.log_file(path)
        run.log_file(results / "status.json")
        run.log_table(rows, "audit_table.json")
    print(path.read_text())
    say(f"wrote {path} and {results / 'status.json'}")
    return settle(tracker, run, ExitStatus.OK)


def log_unrun_cells(tracker: Tracker, directory: Path, cells: list[CellRecord]) -> None:
    """Cells that could not install or import (or whose process died) never reached MLflow themselves: log a run
    for each, once (the run id is written back into the cell's file in ``directory``)."""
    from dataclasses import replace

    for cell in cells:
        if cell.status == CellStatus.RAN or cell.mlflow_run_id:
            continue
        with tracker.run(f"audit {cell.cell}", tags={Tag.KIND: RunKind.AUDIT_CELL, Tag.CELL: cell.cell}) as run:
            run.log(
                params={Param.CELL: cell.cell},
                tags={
                    Tag.STATUS: cell.status,
                    Tag.REASON: cell.reason,
                    **{f"{package}{PIN_SUFFIX}": version or "latest" for package, version in cell.pins.items()},
                },
            )
        if run.run_id:
            replace(cell, mlflow_run_id=run.run_id).write(directory)
