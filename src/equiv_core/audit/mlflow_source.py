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
from typing import Any

from equiv_core.audit.record import CellRecord, CellStatus
from equiv_core.support.errors import EnvironmentFault
from equiv_core.tracking.store import Tracker

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
    from mlflow.artifacts import download_artifacts

    runs = tracker.client.search_runs(
        [tracker.experiment_id],
        "tags.kind = 'audit-cell' and attributes.status != 'RUNNING'",
        order_by=["attributes.start_time DESC"],
        max_results=5000,
    )
    newest: dict[str, Any] = {}
    for run in runs:
        if run.data.tags.get("audit_source", "matrix") == "matrix":
            newest.setdefault(run.data.tags.get("cell", run.info.run_name), run)
    records = []
    directory.mkdir(parents=True, exist_ok=True)
    for cell, run in sorted(newest.items()):
        artifacts = {item.path for item in tracker.client.list_artifacts(run.info.run_id)}
        if run.info.status != "FINISHED" or CELL_ARTIFACT not in artifacts:
            record = _from_tags(cell, run)
            (directory / f"{record.slug}.npz").unlink(missing_ok=True)
            record.write(directory)
            records.append(record)
            continue
        with tempfile.TemporaryDirectory(dir=directory) as scratch:  # same file system: the move is a rename
            fetch = partial(download_artifacts, run_id=run.info.run_id, dst_path=scratch, tracking_uri=tracker.uri)
            record = CellRecord.from_dict(json.loads(Path(fetch(artifact_path=CELL_ARTIFACT)).read_text()))
            logits = directory / f"{record.slug}.npz"
            if logits.name in artifacts:
                Path(fetch(artifact_path=logits.name)).replace(logits)
            else:
                logits.unlink(missing_ok=True)  # an older run's logits must not be compared as this one's
        record.write(directory)
        records.append(record)
    return records


def _from_tags(cell: str, run: Any) -> CellRecord:
    """The record of a cell with no record artifact: one that could not install or import (its report logged its
    tags), or whose run ended without finishing."""
    tags: dict[str, str] = run.data.tags
    pins = {
        key.removesuffix("_pin"): None if value == "latest" else value
        for key, value in tags.items()
        if key.endswith("_pin")
    }
    if run.info.status != "FINISHED":
        reason = f"its newest run on the server ended {run.info.status} (run {run.info.run_id})"
        return CellRecord(cell, "error", reason, pins, mlflow_run_id=run.info.run_id)
    status: CellStatus = "unsupported" if tags.get("status") == "unsupported" else "error"
    return CellRecord(cell, status, tags.get("reason"), pins, mlflow_run_id=run.info.run_id)
