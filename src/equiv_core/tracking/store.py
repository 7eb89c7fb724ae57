"""The one module that talks to MLflow: where the store is, connecting, and runs that always end properly.

Default store: an absolute ``sqlite:///…/mlflow/mlflow.db`` in the repository's ``mlflow/`` folder with
artifacts under ``mlflow/artifacts/``. ``MLFLOW_TRACKING_URI`` or ``--tracking-uri`` points everything at a
tracking server instead. A run that is interrupted ends KILLED, one that raises ends FAILED, with what was
already logged kept. A store that fails mid-run does not stop the command: its results are journaled and spooled
to disk for ``equiv runs --upload`` (:mod:`equiv_core.tracking.spool`). A run whose process was killed outright is
recognised by its owner and heartbeat tags (:mod:`equiv_core.tracking.orphans`).

A run that reaches a verdict is renamed to say it (``run actadd-all smollm2-135m FAIL 3/4``) and one whose verdict
is FAIL ends FAILED, with the checks that failed in ``equiv.end_reason``: in the MLflow UI a failing run must not
show the green tick of a clean run. Its verdict tag tells such a run from one that crashed (FAILED, no verdict):
see :attr:`RunSummary.reached_verdict`. The process's exit code is unchanged (1 for a failing finding).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import filelock

from equiv_core.config.catalog import DEFAULT_EXPERIMENT
from equiv_core.findings.verdict import Verdict
from equiv_core.support.errors import UserInputError, first_line
from equiv_core.support.interrupts import deferred
from equiv_core.tracking.orphans import (
    Heartbeat,
    now_ms,
    orphan_reason,
    this_process,
)
from equiv_core.tracking.schema import EXPERIMENT_KIND_TRAINING, MATRIX_TASK_ENV, RunKind, Tag
from equiv_core.tracking.spool import Journal, Spooled, SpooledLog, SpooledRun

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Outcome:
    """A run's conclusion: ``failed`` names the checks that failed (none: PASS); ``label`` is appended to the run's
    name (``PASS 4/4``)."""

    failed: tuple[str, ...]
    label: str

    @property
    def verdict(self) -> Verdict:
        return Verdict.FAIL if self.failed else Verdict.PASS

    @classmethod
    def counted(cls, failed: tuple[str, ...], total: int, unit: str = "") -> Outcome:
        """The outcome of ``total`` checks of which ``failed`` failed, labelled ``FAIL 3/4`` (``unit``: what
        they are, e.g. ``checks``, added after the count unless "")."""
        verdict = Verdict.FAIL if failed else Verdict.PASS
        return cls(failed, f"{verdict.value} {total - len(failed)}/{total}" + (f" {unit}" if unit else ""))


@dataclass(frozen=True, slots=True)
class StoredRun:
    """A finished (or failed, or killed) run as read back from the store: ``status`` is MLflow's (FINISHED, FAILED,
    KILLED), ``tags`` its tags by key (:class:`~equiv_core.tracking.schema.Tag`)."""

    run_id: str
    name: str
    status: str
    tags: dict[str, str]


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One run as listed by ``equiv runs``: ``start_ms`` in ms since the epoch, ``parent`` "" for a top-level
    run, ``orphaned`` the reason its owner is gone ("" when it is not orphaned)."""

    run_id: str
    name: str
    status: str
    start_ms: int
    parent: str
    orphaned: str
    verdict: str = ""  # the Tag.VERDICT, "" when the run has none

    @property
    def reached_verdict(self) -> bool:
        """The run ran to its end: FINISHED, or FAILED because its verdict is FAIL (not a crash, not killed)."""
        return self.status == "FINISHED" or (self.status == "FAILED" and self.verdict == Verdict.FAIL.value)


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


def _retry_locked(action: Callable[[], T], say: Callable[[str], None] | None = None, attempts: int = 8) -> T:
    """Run ``action``, retrying when SQLite reports "database is locked" (several local writers at once), with
    one line per retry."""
    for attempt in range(attempts):
        try:
            with deferred():  # Ctrl-C / SIGTERM wait for the call, not for the retries: no half-done transaction
                return action()
        except Exception as error:  # noqa: BLE001 - MLflow wraps the SQLAlchemy error in its own types
            if "database is locked" not in str(error) or attempt == attempts - 1:
                raise
            delay = 0.2 * 2**attempt
            if say is not None:
                say(f"the MLflow store is locked by another writer; retry {attempt + 2}/{attempts} in {delay:.1f} s")
            time.sleep(delay)
    raise AssertionError("unreachable")


class _DropStoreTracebacks(logging.Filter):
    """MLflow logs every SQLAlchemy error of its SQLite store as an ERROR with a traceback before raising it
    (``mlflow.store.db.utils``); equiv says one line instead: a lock retry (above) or the store's failure
    (:meth:`Tracker.write`, ``--debug`` for the traceback). Only records carrying a traceback are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.exc_info is None and "Traceback" not in record.getMessage()


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


def _root_cause(error: BaseException) -> BaseException:
    """The innermost error of a chain (``raise ... from``, or raised while handling): SQLAlchemy and MLflow wrap
    the sqlite3 error that says what happened ("database or disk is full") in errors that say where."""
    seen = {id(error)}
    while True:
        inner = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
        if inner is None or id(inner) in seen:
            return error
        seen.add(id(inner))
        error = inner


def _failure_line(error: BaseException, limit: int = 160) -> str:
    """One line naming what failed: the root cause's first line, with its type where the text does not name it."""
    cause = _root_cause(error)
    line = first_line(cause, limit)
    name = type(cause).__name__
    return line if line.startswith(name) else f"{name}: {line}"


@dataclass
class TrackedRun:
    """An open MLflow run (children are opened with ``Tracker.run(..., parent=...)``). Every call is journaled by
    its tracker and sent to the store while the store works; with no tracker, as under ``--no-mlflow``, every
    log call does nothing. ``run_id`` is "" when the store had failed before the run was opened."""

    tracker: Tracker | None
    run_id: str
    name: str
    key: str = ""
    parent: TrackedRun | None = None
    outcome: Outcome | None = None  # set by conclude(): applied when the run ends without an error
    children_failed: list[str] = field(default_factory=list)  # names of child runs that concluded FAIL
    children_concluded: int = 0

    def conclude(self, outcome: Outcome) -> None:
        """The run's verdict, known at its end: when the run's block ends without an error, the run is renamed
        ``<name> <outcome label>``, tagged with the verdict and, when it is FAIL, ended FAILED with the failed
        checks as its end reason (see the module docstring); the parent's tally counts it."""
        self.outcome = outcome
        if self.parent is not None:
            self.parent.children_concluded += 1
            if outcome.verdict is Verdict.FAIL:
                self.parent.children_failed.append(self.name)

    @property
    def enabled(self) -> bool:
        """False under ``--no-mlflow``: callers skip building what only the log would use (the environment
        manifest takes most of a second)."""
        return self.tracker is not None

    def log(
        self,
        params: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        tags: dict[str, Any] | None = None,
    ) -> None:
        """Params, metrics and tags in one batch (one write, so fewer lock waits on SQLite)."""
        if self.tracker is None:
            return
        entry = SpooledLog(
            self.key,
            "batch",
            params={key: _text(value)[:6000] for key, value in (params or {}).items()},
            metrics={key: float(value) for key, value in (metrics or {}).items() if value is not None},
            tags={key: _text(value)[:5000] for key, value in (tags or {}).items()},
            stamp=now_ms(),
        )
        self.tracker.send(self, entry)

    def log_json(self, payload: Any, artifact_file: str) -> None:
        if self.tracker is not None:
            self.tracker.send(self, SpooledLog(self.key, "dict", artifact=artifact_file, content=payload))

    def log_text(self, text: str, artifact_file: str) -> None:
        if self.tracker is not None:
            self.tracker.send(self, SpooledLog(self.key, "text", artifact=artifact_file, content=text))

    def log_file(self, path: Path, artifact_path: str | None = None) -> None:
        if self.tracker is not None:
            copy = self.tracker.journal.keep_file(path)
            self.tracker.send(self, SpooledLog(self.key, "file", artifact=artifact_path or "", file=copy), path)

    def log_table(self, rows: list[dict[str, Any]], artifact_file: str) -> None:
        """Rows as an MLflow table artifact (shown as a table in the UI's artifact view)."""
        if self.tracker is None:
            return
        columns = list(dict.fromkeys(key for row in rows for key in row))
        data = {column: [str(row.get(column, "")) for row in rows] for column in columns}
        self.tracker.send(self, SpooledLog(self.key, "table", artifact=artifact_file, content=data))


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)


def apply_log(client: Any, run_id: str, entry: SpooledLog, file: Path | None) -> None:
    """Send one journaled call to the store (``file``: where a ``file`` entry's content lies)."""
    from mlflow.entities import Metric, Param, RunTag

    if entry.kind == "batch":
        metrics = [Metric(key, value, entry.stamp, 0) for key, value in entry.metrics.items()]
        params = [Param(key, value) for key, value in entry.params.items()]
        tags = [RunTag(key, value) for key, value in entry.tags.items()]
        client.log_batch(run_id, metrics, params, tags)
    elif entry.kind == "dict":
        client.log_dict(run_id, entry.content, entry.artifact)
    elif entry.kind == "text":
        client.log_text(run_id, entry.content, entry.artifact)
    elif entry.kind == "table":
        client.log_table(run_id, data=entry.content, artifact_file=entry.artifact)
    else:
        client.log_artifact(run_id, str(file), entry.artifact or None)


class Tracker:
    """Runs in one MLflow experiment of one tracking store.

    When the store fails (server gone, disk full), the first failure's one line is kept in :attr:`failure`,
    later calls only go to the :attr:`journal`, and :meth:`settle` spools the journal to disk at the end.
    """

    def __init__(self, uri: str, experiment: str = DEFAULT_EXPERIMENT) -> None:
        self.uri = uri
        self.experiment_name = experiment
        self.experiment_id = ""
        self.client: Any = None
        self.failure = ""
        self.journal = Journal()
        self.say: Callable[[str], None] | None = None
        self.seconds = 0.0  # wall time spent reaching the store and in calls to it (this thread)

    def connect(self) -> Tracker:
        """Reach the store and make sure the experiment exists; a one-line UserInputError if unreachable."""
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail fast, not after minutes of retries
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        # With a server store MLflow writes "View run ... at: <url>" to stdout at every run end (MLflow 3.x,
        # TrackingServiceClient._log_url); stdout holds the report only.
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        logging.getLogger("mlflow.store.db.utils").addFilter(_DropStoreTracebacks())
        started = time.perf_counter()
        from mlflow import MlflowClient

        try:
            with _store_lock(self.uri), deferred():  # no interrupt halfway through creating the schema
                self.client = MlflowClient(tracking_uri=self.uri)
                self.experiment_id = experiment_id(self.client, self.experiment_name, self._artifact_location())
        except Exception as error:  # noqa: BLE001 - any failure here means "cannot use this store"
            raise UserInputError(
                f"cannot reach the MLflow tracking store {self.uri}: {first_line(error)} "
                "(start the server, fix --tracking-uri / MLFLOW_TRACKING_URI, or pass --no-mlflow)"
            ) from None
        finally:
            self.seconds += time.perf_counter() - started
        return self

    def _artifact_location(self) -> str | None:
        """Next to a local SQLite store: ``<store dir>/artifacts``; servers decide for themselves."""
        path = _sqlite_path(self.uri)
        return (path.parent / "artifacts").as_uri() if path is not None else None

    def write(self, action: Callable[[], T]) -> T | None:
        """``action()`` against the store, unless it has failed; a failure is remembered, not raised."""
        if self.failure:
            return None
        started = time.perf_counter()
        try:
            return _retry_locked(action, self.say)
        except Exception as error:  # noqa: BLE001 - any store error: keep going, spool at the end (settle)
            self.failure = _failure_line(error)
            return None
        finally:
            self.seconds += time.perf_counter() - started

    def send(self, run: TrackedRun, entry: SpooledLog, file: Path | None = None) -> None:
        """Journal ``entry`` and send it to the store."""
        self.journal.add(entry)
        if run.run_id:
            self.write(lambda: apply_log(self.client, run.run_id, entry, file))

    @contextmanager
    def run(
        self, name: str, parent: TrackedRun | None = None, tags: dict[str, Any] | None = None
    ) -> Iterator[TrackedRun]:
        """An MLflow run that ends FINISHED, FAILED (exception) or KILLED (Ctrl-C / SIGTERM), never RUNNING;
        it carries the owner and heartbeat tags of :mod:`equiv_core.tracking.orphans`.

        A run ended by bad user input is also deleted (soft, restorable): bad input leaves nothing behind.
        """
        run_tags = {key: _text(value) for key, value in (tags or {}).items()}
        run_tags[Tag.OWNER] = this_process().to_tag()
        run_tags[Tag.HEARTBEAT] = str(now_ms())
        if os.environ.get(MATRIX_TASK_ENV):  # child runs too: a killed task's open child is ended with its parent
            run_tags[Tag.MATRIX_TASK] = os.environ[MATRIX_TASK_ENV]
        created_tags = dict(run_tags)
        if parent is not None and parent.run_id:
            created_tags[Tag.PARENT] = parent.run_id
        created = self.write(lambda: self.client.create_run(self.experiment_id, run_name=name, tags=created_tags))
        run_id = created.info.run_id if created is not None else ""
        spooled = self.journal.open_run(name, parent.key if parent is not None else None, run_tags, run_id)
        tracked = TrackedRun(self, run_id, name, spooled.key, parent)
        heartbeat = Heartbeat(self._beat(run_id)) if run_id and parent is None else None
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
            # One deferral around every write that ends the run: a Ctrl-C or SIGTERM arriving while the verdict is
            # written waits until the run is terminated, instead of skipping set_terminated (a RUNNING orphan).
            with deferred():
                if heartbeat is not None:
                    heartbeat.stop()
                if status == "FINISHED" and tracked.outcome is not None:
                    status = self._conclude(tracked, spooled, tracked.outcome)
                spooled.status = status
                if run_id:
                    self.write(lambda: self.client.set_terminated(run_id, status))
                    if bad_input:  # input only found bad after loading (e.g. a layer out of range): leave no trace
                        self.write(lambda: self.client.delete_run(run_id))

    def _conclude(self, run: TrackedRun, spooled: SpooledRun, outcome: Outcome) -> str:
        """Rename a run that ended with ``outcome`` and tag it (a top-level run's verdict tag is written here, only
        once it is known; a child's carries the finding's own verdict); the status it ends with."""
        tags: dict[str, Any] = {} if run.parent is not None else {Tag.VERDICT: outcome.verdict.value}
        if outcome.failed:
            tags[Tag.END_REASON] = f"verdict FAIL: {', '.join(outcome.failed)} failed"
        if tags:
            run.log(tags=tags)
        run.name = spooled.name = f"{run.name} {outcome.label}"
        if run.run_id:
            self.write(lambda: self.client.update_run(run.run_id, name=run.name))
        return "FAILED" if outcome.failed else "FINISHED"

    def _beat(self, run_id: str) -> Callable[[int], None]:
        def beat(stamp: int) -> None:
            if not self.failure:
                with suppress(Exception):  # a missed heartbeat is harmless; the next log call reports failures
                    _retry_locked(lambda: self.client.set_tag(run_id, Tag.HEARTBEAT, str(stamp)))

        return beat

    def runs(self, limit: int = 1000, top_level: bool = False) -> list[RunSummary]:
        """The experiment's runs, newest first (only those without a parent with ``top_level``)."""
        found = _retry_locked(
            lambda: self.client.search_runs(
                [self.experiment_id], "", order_by=["attributes.start_time DESC"], max_results=limit
            )
        )
        summaries = [
            RunSummary(
                run.info.run_id,
                run.info.run_name or run.info.run_id,
                run.info.status,
                run.info.start_time or 0,
                run.data.tags.get(Tag.PARENT, ""),
                orphan_reason(run.info.status, run.data.tags),
                run.data.tags.get(Tag.VERDICT, ""),
            )
            for run in found
        ]
        return [summary for summary in summaries if not (top_level and summary.parent)]

    def ended_runs(self, kind: RunKind, limit: int = 5000) -> list[StoredRun]:
        """The experiment's runs of ``kind`` that are no longer RUNNING, newest first, with their tags."""
        found = self.client.search_runs(
            [self.experiment_id],
            f"tags.{Tag.KIND} = '{kind}' and attributes.status != 'RUNNING'",
            order_by=["attributes.start_time DESC"],
            max_results=limit,
        )
        return [
            StoredRun(run.info.run_id, run.info.run_name or run.info.run_id, run.info.status, dict(run.data.tags))
            for run in found
        ]

    def artifact_names(self, run_id: str) -> frozenset[str]:
        """The names of a run's top-level artifacts."""
        return frozenset(item.path for item in self.client.list_artifacts(run_id))

    def download_artifact(self, run_id: str, artifact: str, directory: Path) -> Path:
        """Download one artifact of a run into ``directory``; returns the local path."""
        from mlflow.artifacts import download_artifacts

        return Path(
            download_artifacts(run_id=run_id, artifact_path=artifact, dst_path=str(directory), tracking_uri=self.uri)
        )

    def end_task_runs(self, task: str, status: str, reason: str) -> list[str]:
        """End every run still RUNNING that the Ray task ``task`` opened (its :attr:`Tag.MATRIX_TASK`,
        ``<matrix run>/<cell>/<attempt>``) with ``status``, saying why in ``equiv.end_reason``: their process is gone
        (the task's worker died, or the task was cancelled), so they would stay RUNNING. Returns their ids."""
        value = task.replace("'", "")
        found = _retry_locked(
            lambda: self.client.search_runs(
                [self.experiment_id],
                f"tags.`{Tag.MATRIX_TASK}` = '{value}' and attributes.status = 'RUNNING'",
                max_results=1000,
            )
        )
        ended = [str(run.info.run_id) for run in found]
        for run_id in ended:
            _retry_locked(partial(self.client.set_tag, run_id, Tag.END_REASON, reason))
            _retry_locked(partial(self.client.set_terminated, run_id, status))
        return ended

    def end_orphan(self, run: RunSummary) -> None:
        """Mark an orphaned run FAILED, saying why in the ``equiv.end_reason`` tag."""
        _retry_locked(lambda: self.client.set_tag(run.run_id, Tag.END_REASON, f"orphaned: {run.orphaned}"))
        _retry_locked(lambda: self.client.set_terminated(run.run_id, "FAILED"))

    def upload(self, spooled: Spooled) -> list[str]:
        """Replay a spooled journal into this tracker's experiment as new runs, ended with the status they had;
        the original runs the failed store had opened are ended FAILED when they are found here. Returns the new
        ids of the top-level runs."""
        ids: dict[str, str] = {}
        for spooled_run in spooled.runs:
            tags = {**spooled_run.tags, Tag.UPLOADED_FROM: spooled.directory.name}
            if spooled_run.parent is not None:
                tags[Tag.PARENT] = ids[spooled_run.parent]
            created = _retry_locked(
                partial(self.client.create_run, self.experiment_id, run_name=spooled_run.name, tags=tags), self.say
            )
            ids[spooled_run.key] = created.info.run_id
        for entry in spooled.logs:
            file = spooled.directory / "files" / entry.file if entry.kind == "file" else None
            _retry_locked(partial(apply_log, self.client, ids[entry.run], entry, file), self.say)
        for spooled_run in spooled.runs:
            status = "FAILED" if spooled_run.status == "RUNNING" else spooled_run.status
            _retry_locked(partial(self.client.set_terminated, ids[spooled_run.key], status), self.say)
            if spooled_run.remote_id:  # run ids are UUIDs: found here, it is the same run
                self._end_replaced(spooled_run.remote_id, ids[spooled_run.key])
        return [ids[run.key] for run in spooled.runs if run.parent is None]

    def _end_replaced(self, run_id: str, replacement: str) -> None:
        with suppress(Exception):  # the original may be gone, or in another experiment: nothing to end
            if self.client.get_run(run_id).info.status == "RUNNING":
                self.client.set_tag(run_id, Tag.END_REASON, f"store failed mid-run; uploaded as {replacement}")
                self.client.set_terminated(run_id, "FAILED")

    def settle(self) -> Path | None:
        """At the end of a command: None when the store has everything; else the directory the journal was
        spooled to (see :mod:`equiv_core.tracking.spool`)."""
        if not self.failure:
            self.journal.discard()
            return None
        return self.journal.spool(default_store_dir() / "spool", self.uri, self.experiment_name, self.failure)


def experiment_id(client: Any, name: str, artifact_location: str | None) -> str:
    """The id of experiment ``name``, created if missing, marked a model-training experiment (runs, not traces: see
    :data:`Tag.EXPERIMENT_KIND`) if it has no kind yet. Cells on several machines may create it at the same moment
    on a fresh server: the loser of that race gets RESOURCE_ALREADY_EXISTS and reads the winner's id."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return str(
                client.create_experiment(name, artifact_location, {Tag.EXPERIMENT_KIND: EXPERIMENT_KIND_TRAINING})
            )
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if Tag.EXPERIMENT_KIND not in experiment.tags:  # made by an older equiv, or by hand; a kind set by hand stays
        # A hint for UIs that read it (MLflow 3.17 itself picks by its switch): never worth failing a read-only
        # command on a store this user may not write to.
        with suppress(MlflowException):
            client.set_experiment_tag(experiment.experiment_id, Tag.EXPERIMENT_KIND, EXPERIMENT_KIND_TRAINING)
    return str(experiment.experiment_id)


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
        yield TrackedRun(None, "", name)  # no tracker: every log call is a no-op


def open_tracker(
    enabled: bool, uri: str | None, experiment: str = DEFAULT_EXPERIMENT, say: Callable[[str], None] | None = None
) -> Tracker:
    """A connected tracker, or a :class:`NullTracker` when logging is off; ``say`` gets its one-line notes (lock
    retries, a store that failed). An empty experiment name is bad input."""
    if not enabled:
        return NullTracker()
    if not experiment.strip():
        raise UserInputError("--experiment must be a non-empty MLflow experiment name")
    tracker = Tracker(resolve_tracking_uri(uri), experiment)
    tracker.say = say
    return tracker.connect()
