"""Audit cells from a shared MLflow tracking server: what ``equiv audit-report --tracking-uri URI`` reads, so a team
runs cells on different machines against one server and builds the report anywhere.

Each cell run (tag ``kind = audit-cell``) carries its whole :class:`~equiv_core.audit.record.CellRecord` as the
artifact ``audit_cell.json`` and its logits as ``<slug>.npz``; a cell that could not install or import has only its
tags (``status``, ``reason``, ``<package>_pin``). The newest finished run of each cell id wins.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from equiv_core.audit.record import CellRecord, CellStatus
from equiv_core.errors import EnvironmentFault
from equiv_core.tracking import Tracker

CELL_ARTIFACT = "audit_cell.json"


def download_cells(tracker: Tracker, directory: Path) -> list[CellRecord]:
    """Write the newest finished run of every audit cell in the tracker's experiment into ``directory`` (cell
    records and logits), and return the records. Raises EnvironmentFault when the server stops answering."""
    from mlflow.artifacts import download_artifacts

    try:
        runs = tracker.client.search_runs(
            [tracker.experiment_id],
            "tags.kind = 'audit-cell' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=5000,
        )
    except Exception as error:  # noqa: BLE001 - any failure means the store could not be read
        raise EnvironmentFault(f"cannot read audit cells from {tracker.uri}: {error}") from error
    newest: dict[str, Any] = {}
    for run in runs:
        newest.setdefault(run.data.tags.get("cell", run.info.run_name), run)
    records = []
    directory.mkdir(parents=True, exist_ok=True)
    for cell, run in sorted(newest.items()):
        artifacts = {item.path for item in tracker.client.list_artifacts(run.info.run_id)}
        if CELL_ARTIFACT not in artifacts:
            tags = run.data.tags
            pins = {
                k.removesuffix("_pin"): (None if v == "latest" else v) for k, v in tags.items() if k.endswith("_pin")
            }
            record = CellRecord(
                cell, tags.get("status", "error"), tags.get("reason"), pins, mlflow_run_id=run.info.run_id
            )
            record.write(directory)
            records.append(record)
            continue
        with tempfile.TemporaryDirectory() as scratch:
            local = Path(
                download_artifacts(
                    run_id=run.info.run_id, artifact_path=CELL_ARTIFACT, dst_path=scratch, tracking_uri=tracker.uri
                )
            )
            record = CellRecord.from_dict(json.loads(local.read_text()))
            logits = f"{record.slug}.npz"
            if logits in artifacts:
                fetched = Path(
                    download_artifacts(
                        run_id=run.info.run_id, artifact_path=logits, dst_path=scratch, tracking_uri=tracker.uri
                    )
                )
                fetched.replace(directory / logits)
        record.write(directory)
        records.append(record)
    return records


def _from_tags(cell: str, run: Any) -> CellRecord:
    """The record of a cell that did not run, from the tags its report logged (no artifact)."""
    tags: dict[str, str] = run.data.tags
    pins = {
        key.removesuffix("_pin"): None if value == "latest" else value
        for key, value in tags.items()
        if key.endswith("_pin")
    }
    status: CellStatus = "unsupported" if tags.get("status") == "unsupported" else "error"
    return CellRecord(
        cell,
        status,
        tags.get("reason"),
        pins,
        mlflow_run_id=run.info.run_id,
    )
