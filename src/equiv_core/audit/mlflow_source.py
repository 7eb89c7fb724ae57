"""Audit cells from a shared MLflow tracking server: what ``equiv audit-report --tracking-uri URI`` reads, so a team
runs cells on different machines against one server and builds the report anywhere.

Each cell run (tag ``kind = audit-cell``) carries its whole :class:`~equiv_core.audit.record.CellRecord` as the
artifact ``audit_cell.json`` and its logits as ``<slug>.npz``; a cell that could not install or import has only its
tags (``status``, ``reason``, ``<package>_pin``). The newest finished run of each cell id wins.
"""

from __future__ import annotations

import json
import tempfile
from functools import partial
from pathlib import Path

from equiv_core.audit.record import CellRecord, CellStatus
from equiv_core.support.errors import EnvironmentFault
from equiv_core.tracking.schema import PIN_SUFFIX, RunKind, Tag
from equiv_core.tracking.store import StoredRun, Tracker

CELL_ARTIFACT = "audit_cell.json"


def download_cells(tracker: Tracker, directory: Path) -> list[CellRecord]:
    """Write the newest run of every default-matrix audit cell in the tracker's experiment into ``directory`` (cell
    records and logits), and return the records. A newest run that did not finish (crashed, or killed) is an
    ``error`` cell; runs still RUNNING are passed over. Raises EnvironmentFault when the server stops answering."""
    try:
        return _download(tracker, directory)
    except (OSError, ValueError) as error:
        raise EnvironmentFault(f"cannot write the audit cells into {directory}: {error}") from error
    except Exception as error:  # noqa: BLE001 - MLflow and HTTP errors alike: the store could not be read
        raise EnvironmentFault(f"cannot read audit cells from {tracker.uri}: {error}") from error


def _download(tracker: Tracker, directory: Path) -> list[CellRecord]:
    newest: dict[str, StoredRun] = {}
    for run in tracker.ended_runs(RunKind.AUDIT_CELL):
        if run.tags.get(Tag.AUDIT_SOURCE, "matrix") == "matrix":
            newest.setdefault(run.tags.get(Tag.CELL, run.name), run)
    records = []
    directory.mkdir(parents=True, exist_ok=True)
    for cell, run in sorted(newest.items()):
        artifacts = tracker.artifact_names(run.run_id)
        if run.status != "FINISHED" or CELL_ARTIFACT not in artifacts:
            record = _from_tags(cell, run)
            (directory / f"{record.slug}.npz").unlink(missing_ok=True)
            record.write(directory)
            records.append(record)
            continue
        with tempfile.TemporaryDirectory(dir=directory) as scratch:  # same file system: the move is a rename
            fetch = partial(tracker.download_artifact, run.run_id, directory=Path(scratch))
            record = CellRecord.from_dict(json.loads(fetch(CELL_ARTIFACT).read_text()))
            logits = directory / f"{record.slug}.npz"
            if logits.name in artifacts:
                fetch(logits.name).replace(logits)
            else:
                logits.unlink(missing_ok=True)  # an older run's logits must not be compared as this one's
        record.write(directory)
        records.append(record)
    return records


def _from_tags(cell: str, run: StoredRun) -> CellRecord:
    """The record of a cell with no record artifact: one that could not install or import (its report logged its
    tags), or whose run ended without finishing."""
    pins = {
        key.removesuffix(PIN_SUFFIX): None if value == "latest" else value
        for key, value in run.tags.items()
        if key.endswith(PIN_SUFFIX)
    }
    if run.status != "FINISHED":
        reason = f"its newest run on the server ended {run.status} (run {run.run_id})"
        return CellRecord(cell, CellStatus.ERROR, reason, pins, mlflow_run_id=run.run_id)
    unsupported = run.tags.get(Tag.STATUS) == CellStatus.UNSUPPORTED
    status = CellStatus.UNSUPPORTED if unsupported else CellStatus.ERROR
    return CellRecord(cell, status, run.tags.get(Tag.REASON), pins, mlflow_run_id=run.run_id)
