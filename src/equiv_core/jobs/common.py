"""What every command's work shares: progress lines on stderr, the tracking store opened from the options, the
version tags known before a model loads, and how a command ends (where its run was logged, or what was spooled)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from equiv_core.config.tracking import TrackingOptions
from equiv_core.support.errors import EnvironmentFault, ExitStatus, UserInputError
from equiv_core.support.progress import say
from equiv_core.tracking.store import TrackedRun, Tracker


def existing_file(value: str, flag: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise UserInputError(f"{flag} {value!r}: no such file")
    return path


def early_tags() -> dict[str, Any]:
    """Version tags known before the model loads (no device query: CUDA must not start before determinism is set),
    so even a run that dies while loading says where it ran."""
    from equiv_core.models.provenance import version_info
    from equiv_core.tracking.run_logging import environment_tags

    return environment_tags(version_info().to_dict())


def mlflow_info(tracker: Tracker, run: TrackedRun) -> dict[str, Any] | None:
    if not run.run_id:
        return None
    return {"tracking_uri": tracker.uri, "experiment": tracker.experiment_name, "run_id": run.run_id}


def settle(tracker: Tracker, run: TrackedRun | None, status: int) -> int:
    """Say where the run was logged and return ``status``; when the store failed mid-run, spool what it missed,
    say how to upload it, and return :data:`ExitStatus.ENVIRONMENT`."""
    try:
        spooled = tracker.settle()
    except OSError as error:
        raise EnvironmentFault(
            f"the MLflow store {tracker.uri} failed during the run ({tracker.failure}) and its results could not be "
            f"kept locally either: {error.strerror or error}; the report above and any --json file are all there "
            f"is: free disk space for the store, or point EQUIV_MLFLOW_DIR / --tracking-uri elsewhere"
        ) from None
    if spooled is not None:
        say(
            f"error: the MLflow store {tracker.uri} failed during the run ({tracker.failure}); the run's results are "
            f"kept in {spooled}: upload them when the store is back with `equiv runs --upload {spooled}`"
        )
        return ExitStatus.ENVIRONMENT
    if run is not None and run.run_id:
        say(
            f"logged MLflow run {run.run_id} ({run.name!r}) to {tracker.uri}, experiment "
            f"{tracker.experiment_name!r}; compare with `equiv compare`"
        )
    return status


def open_tracker(options: TrackingOptions) -> Tracker:
    """The tracking store ``options`` name, connected (a NullTracker for ``--no-mlflow``); raises EnvironmentFault
    when it cannot be reached."""
    from equiv_core.tracking.store import open_tracker as connect

    return connect(options.enabled, options.uri, options.experiment, say)
