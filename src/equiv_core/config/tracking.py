"""Where a command's runs are logged: the tracking options every command takes, checked without MLflow."""

from __future__ import annotations

from dataclasses import dataclass

from equiv_core.config.catalog import DEFAULT_EXPERIMENT


@dataclass(frozen=True, slots=True)
class TrackingOptions:
    """Where runs are logged: ``enabled`` False is ``--no-mlflow``; ``uri`` None means the default store
    (``MLFLOW_TRACKING_URI``, else the sqlite store in ``mlflow/``); ``experiment`` is the MLflow experiment name."""

    enabled: bool = True
    uri: str | None = None
    experiment: str = DEFAULT_EXPERIMENT
