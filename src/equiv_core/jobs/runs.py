"""``equiv compare`` and ``equiv runs``: MLflow runs side by side; the run list, orphaned runs ended, spooled runs
uploaded."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from equiv_core.config.tracking import TrackingOptions
from equiv_core.jobs.common import open_tracker
from equiv_core.support.errors import ExitStatus, UserInputError
from equiv_core.support.progress import say


def compare_job(run_ids: list[str], tracking: TrackingOptions) -> int:
    """``equiv compare``: MLflow runs side by side."""
    from equiv_core.tracking.compare import compare_runs, latest_parent_runs

    tracker = open_tracker(replace(tracking, enabled=True))
    if run_ids:
        chosen, note = run_ids, ""
    else:
        chosen, note = latest_parent_runs(tracker)
    if len(chosen) < 2:
        raise UserInputError(f"give at least 2 run ids to compare, got {len(chosen)}")
    if note:
        say(note)
    print(compare_runs(tracker, chosen))
    return ExitStatus.OK


def runs_job(gc: bool, upload: str | None, limit: int, tracking: TrackingOptions) -> int:
    """``equiv runs``: the newest top-level runs and their status, orphaned ones marked; ``gc`` ends every
    orphaned run FAILED with the reason; ``upload`` replays a directory spooled when a store failed mid-run."""
    from equiv_core.support.tables import text_table

    if upload is not None:
        return _upload(Path(upload), tracking)
    tracker = open_tracker(replace(tracking, enabled=True))
    runs = tracker.runs()
    if gc:
        orphans = [run for run in runs if run.orphaned]
        for run in orphans:
            tracker.end_orphan(run)
        say(
            f"marked {len(orphans)} orphaned run(s) FAILED"
            + (f": {', '.join(r.run_id for r in orphans)}" if orphans else "")
        )
        runs = tracker.runs()
    listed = [run for run in runs if not run.parent][:limit]
    rows = [["run id", "started (UTC)", "status", "name", "note"]]
    for run in listed:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(run.start_ms / 1000))
        status = f"{run.status} (orphaned)" if run.orphaned else run.status
        rows.append([run.run_id, started, status, run.name, run.orphaned])
    print("\n".join(text_table(rows)) if listed else f"no runs in experiment {tracker.experiment_name!r}")
    if any(run.orphaned for run in runs):
        say("orphaned runs were left RUNNING by a process that is gone; `equiv runs --gc` marks them FAILED")
    return ExitStatus.OK


def _upload(directory: Path, tracking: TrackingOptions) -> int:
    from equiv_core.tracking.spool import mark_uploaded, read_spool

    spooled = read_spool(directory)
    tracker = open_tracker(TrackingOptions(True, tracking.uri or spooled.tracking_uri, spooled.experiment))
    run_ids = tracker.upload(spooled)
    mark_uploaded(spooled, run_ids, tracker.uri)
    say(
        f"uploaded {directory} to {tracker.uri}, experiment {tracker.experiment_name!r}, as run(s) {', '.join(run_ids)}"
    )
    return ExitStatus.OK
