"""The one module that talks to MLflow: where the store is, connecting, and runs that always end properly.

Default store: an absolute ``sqlite:///…/mlflow/mlflow.db`` in the repository's ``mlflow/`` folder with
artifacts under ``mlflow/artifacts/``. ``MLFLOW_TRACKING_URI`` or ``--tracking-uri`` points everything at a
tracking server instead. A run that is interrupted ends KILLED, one that raises ends FAILED, with what was
already logged kept: no run is ever left RUNNING.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import filelock

from equiv_core.errors import UserInputError

DEFAULT_EXPERIMENT = "equiv-bench"
AUDIT_EXPERIMENT = "equiv-audit"
T = TypeVar("T")


def default_store_dir() -> Path:
    """``$EQUIV_MLFLOW_DIR``, else the ``mlflow/`` folder of the checkout this package runs from, else ./mlflow."""
    override = os.environ.get("EQUIV_MLFLOW_DIR")
    if override:
        return Path(override).resolve()
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "mlflow").is_dir():
        return checkout / "mlflow"
    return (Path.cwd() / "mlflow").resolve()


def resolve_tracking_uri(explicit: str | None = None) -> str:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else the embedded sqlite store (absolute path)."""
    if explicit:
        return explicit
    from_environment = os.environ.get("MLFLOW_TRACKING_URI")
    if from_environment:
        return from_environment
    return f"sqlite:///{default_store_dir() / 'mlflow.db'}"


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def _retry_locked(action: Callable[[], T], attempts: int = 8) -> T:
    """Run ``action``, retrying when SQLite reports "database is locked" (several local writers at once)."""
    for attempt in range(attempts):
        try:
            return action()
        except Exception as error:  # noqa: BLE001 - MLflow wraps the SQLAlchemy error in its own types
            if "database is locked" not in str(error) or attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialize first-time creation of a local SQLite store (schema migration races between processes)."""
    path = _sqlite_path(uri)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(path.with_suffix(".lock"))):
        yield


@dataclass
class TrackedRun:
    """An open MLflow run (children are opened with ``Tracker.run(..., parent=...)``); with no client, as
    under ``--no-mlflow``, every log call does nothing."""

    client: Any
    run_id: str
    name: str

    def log(
        self,
        params: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        tags: dict[str, Any] | None = None,
    ) -> None:
        """Params, metrics and tags in one batch (one write, so fewer lock waits on SQLite)."""
        if self.client is None:
            return
        from mlflow.entities import Metric, Param, RunTag

        stamp = int(time.time() * 1000)
        batch_params = [Param(key, _text(value)[:6000]) for key, value in (params or {}).items()]
        batch_metrics = [
            Metric(key, float(value), stamp, 0) for key, value in (metrics or {}).items() if value is not None
        ]
        batch_tags = [RunTag(key, _text(value)[:5000]) for key, value in (tags or {}).items()]
        _retry_locked(lambda: self.client.log_batch(self.run_id, batch_metrics, batch_params, batch_tags))

    def log_json(self, payload: Any, artifact_file: str) -> None:
        if self.client is None:
            return
        _retry_locked(lambda: self.client.log_dict(self.run_id, payload, artifact_file))

    def log_text(self, text: str, artifact_file: str) -> None:
        if self.client is None:
            return
        _retry_locked(lambda: self.client.log_text(self.run_id, text, artifact_file))

    def log_file(self, path: Path, artifact_path: str | None = None) -> None:
        if self.client is None:
            return
        _retry_locked(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))

    def log_table(self, rows: list[dict[str, Any]], artifact_file: str) -> None:
        """Rows as an MLflow table artifact (shown as a table in the UI's artifact view)."""
        if self.client is None:
            return
        columns = list(dict.fromkeys(key for row in rows for key in row))
        data = {column: [str(row.get(column, "")) for row in rows] for column in columns}
        _retry_locked(lambda: self.client.log_table(self.run_id, data=data, artifact_file=artifact_file))


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)


class Tracker:
    """Runs in one MLflow experiment of one tracking store."""

    def __init__(self, uri: str, experiment: str = DEFAULT_EXPERIMENT) -> None:
        self.uri = uri
        self.experiment_name = experiment
        self.experiment_id = ""

    def connect(self) -> Tracker:
        """Reach the store and make sure the experiment exists; a one-line UserInputError if unreachable."""
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail fast, not after minutes of retries
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        from mlflow import MlflowClient

        try:
            with _store_lock(self.uri):
                self.client = MlflowClient(tracking_uri=self.uri)
                experiment = self.client.get_experiment_by_name(self.experiment_name)
                if experiment is None:
                    artifacts = self._artifact_location()
                    self.experiment_id = self.client.create_experiment(self.experiment_name, artifacts)
                else:
                    self.experiment_id = experiment.experiment_id
        except Exception as error:  # noqa: BLE001 - any failure here means "cannot use this store"
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
            raise UserInputError(
                f"cannot reach the MLflow tracking store {self.uri}: {first_line} "
                "(start the server, fix --tracking-uri / MLFLOW_TRACKING_URI, or pass --no-mlflow)"
            ) from None
        return self

    def _artifact_location(self) -> str | None:
        """Next to a local SQLite store: ``<store dir>/artifacts``; servers decide for themselves."""
        path = _sqlite_path(self.uri)
        return (path.parent / "artifacts").as_uri() if path is not None else None

    @contextmanager
    def run(
        self, name: str, parent: TrackedRun | None = None, tags: dict[str, Any] | None = None
    ) -> Iterator[TrackedRun]:
        """An MLflow run that ends FINISHED, FAILED (exception) or KILLED (Ctrl-C / SIGTERM), never RUNNING.

        A run ended by bad user input is also deleted (soft, restorable): bad input leaves nothing behind.
        """
        run_tags = {key: _text(value) for key, value in (tags or {}).items()}
        if parent is not None:
            run_tags["mlflow.parentRunId"] = parent.run_id
        created = _retry_locked(lambda: self.client.create_run(self.experiment_id, run_name=name, tags=run_tags))
        tracked = TrackedRun(self.client, created.info.run_id, name)
        status, bad_input = "FINISHED", False
        try:
            yield tracked
        except UserInputError:
            status, bad_input = "FAILED", True
            raise
        except (KeyboardInterrupt, SystemExit):
            status = "KILLED"
            raise
        except BaseException:
            status = "FAILED"
            raise
        finally:
            _retry_locked(lambda: self.client.set_terminated(tracked.run_id, status))
            if bad_input:  # input only found bad after loading (e.g. a layer out of range): leave no trace
                _retry_locked(lambda: self.client.delete_run(tracked.run_id))


class NullTracker(Tracker):
    """``--no-mlflow``: the same interface, logging nothing."""

    def __init__(self) -> None:
        super().__init__("", "")

    def connect(self) -> NullTracker:
        return self

    @contextmanager
    def run(
        self, name: str, parent: TrackedRun | None = None, tags: dict[str, Any] | None = None
    ) -> Iterator[TrackedRun]:
        yield TrackedRun(None, "", name)  # no client: every log call is a no-op


def open_tracker(enabled: bool, uri: str | None, experiment: str = DEFAULT_EXPERIMENT) -> Tracker:
    """A connected tracker, or a :class:`NullTracker` when logging is off."""
    if not enabled:
        return NullTracker()
    return Tracker(resolve_tracking_uri(uri), experiment).connect()
