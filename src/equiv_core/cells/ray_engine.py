"""A matrix's cells as Ray tasks, each in its own environment (Ray 2.60; ``pip install equiv-bench[cluster]``).

Each cell is one task whose ``runtime_env`` (Ray docs, "Environment dependencies") asks pip for the cell's
requirements: Ray builds that environment once per node and caches it (a copy of the node's own virtualenv with
the pins installed over it: Ray's ``_clonevirtualenv``, ~1.9 GB for the default environment), and ships the
project's code at the driver's commit to every node (``py_modules`` of the job). The task calls the same cell
runner as nox (:func:`equiv_core.cells.runner.run_cell`) with the environment's Python, and returns the cell's
record. GPU cells ask for ``num_gpus``; at most ``max_running`` cells run at a time.

Faults: a cell whose environment cannot be built is ``unsupported`` with pip's reason (Ray's
``RuntimeEnvSetupError``); a task whose worker died (killed, out of memory, node lost) is submitted once more, then
the cell is an ``error`` with the reason; Ctrl-C cancels every submitted task (``ray.cancel(force=True)``: the worker
and, through the runner's death signal, its cell process) before it propagates. After a worker died or a task was
cancelled, ``on_gone`` is called with the task's tag so the caller ends the MLflow runs that task left RUNNING.
"""

from __future__ import annotations

import enum
import os
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import (
    GetTimeoutError,
    NodeDiedError,
    OutOfMemoryError,
    RayTaskError,
    RuntimeEnvSetupError,
    TaskCancelledError,
    WorkerCrashedError,
)

from equiv_core.cells.cell import Cell
from equiv_core.cells.runner import run_cell, tail
from equiv_core.tracking.schema import MATRIX_TASK_ENV

SETUP_TIMEOUT_S = 1800  # building an environment that swaps torch downloads ~1 GB: minutes, not Ray's default 600 s
STATUS_EVERY_S = 60.0  # a line naming the running cells when none has finished for this long
CANCEL_WAIT_S = 30.0
ATTEMPTS = 2  # a task whose worker died is submitted once more
WORKER_DIED = (WorkerCrashedError, NodeDiedError, OutOfMemoryError)


class Outcome(enum.StrEnum):
    """How a cell's task ended: the cell ``ran`` (its record says what it found, including a cell that could not
    import or crashed), its environment could not be built (``unsupported``), its worker died on every attempt
    (``error``)."""

    RAN = "ran"
    UNSUPPORTED = "unsupported"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class TaskResult:
    """One cell's task: ``record`` is the text of the record the cell wrote (its kind's JSON format) when it
    ``ran``; ``reason`` one line otherwise. ``seconds`` from the first submission, environment build included."""

    cell: Cell
    outcome: Outcome
    record: str
    reason: str
    attempts: int
    seconds: float


def task_tag(matrix_run: str, cell: Cell, attempt: int) -> str:
    """The value of the ``equiv.matrix_task`` tag of every run a cell's task opens."""
    return f"{matrix_run}/{cell.slug}/{attempt}"


def runtime_env(cell: Cell, threads: int, tag: str) -> dict[str, Any]:
    """The cell's own environment: its requirements installed by pip over a copy of the node's environment, its
    process's threads, offline models, and the task tag its MLflow runs carry."""
    return {
        "pip": {"packages": list(cell.requirements), "pip_install_options": ["--disable-pip-version-check", "--quiet"]},
        "env_vars": {"OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", MATRIX_TASK_ENV: tag},
        "config": {"setup_timeout_seconds": SETUP_TIMEOUT_S},
    }


def _run_on_node(cell: Cell, tracking_uri: str | None) -> str:
    """The task: run ``cell`` with this environment's Python through the cell runner; the text of its record."""
    with tempfile.TemporaryDirectory(prefix="equiv-cell-") as out:
        record = run_cell(cell, Path(sys.executable), Path(out), os.environ, say=print, tracking_uri=tracking_uri)
        return record.read_text()


def pip_reason(error: BaseException) -> str:
    """The line of a failed environment build that says why (pip's last error line)."""
    return f"install failed: {tail(str(error))}"


@dataclass
class _Submitted:
    cell: Cell
    attempt: int
    first_submitted: float


class RayEngine:
    """Runs cells on the Ray cluster at ``address``, shipping the ``equiv_core`` package at ``project`` to every
    node; ``address`` None starts a Ray of its own on this machine (``address="local"``), whose session directory
    (its cells' environments, ~2 GB each, never reused by a later Ray) is removed at :meth:`shutdown`."""

    def __init__(self, address: str | None, project: Path, say: Callable[[str], None]) -> None:
        self.say = say
        ray.init(
            address=address or "local",
            runtime_env={"py_modules": [str(project)]},
            log_to_driver=False,  # each cell's output is in its record and MLflow run; progress is one line a cell
            include_dashboard=False if address is None else None,
            configure_logging=False,
        )
        context = ray.get_runtime_context()
        self._own_session = Path(context.get_temp_dir()) / context.get_session_name() if address is None else None
        self._task = ray.remote(_run_on_node)

    def shutdown(self) -> None:
        ray.shutdown()
        if self._own_session is not None:
            shutil.rmtree(self._own_session, ignore_errors=True)

    def run(
        self,
        cells: list[Cell],
        matrix_run: str,
        tracking_uri: str | None,
        max_running: int,
        threads: int,
        on_gone: Callable[[Cell, str, str], None],
        on_result: Callable[[TaskResult], None],
    ) -> list[TaskResult]:
        """Run every cell, at most ``max_running`` at a time, each with ``threads`` threads; ``on_result`` gets each
        cell's result as its task ends (so nothing finished is lost to a later Ctrl-C), ``on_gone(cell, task tag,
        reason)`` is called after a worker died or a task was cancelled. Returns the results in finishing order."""
        queue = deque(_Submitted(cell, 1, 0.0) for cell in cells)
        running: dict[Any, _Submitted] = {}
        results: list[TaskResult] = []
        last_news = time.monotonic()
        try:
            while queue or running:
                while queue and len(running) < max_running:
                    task = queue.popleft()
                    task.first_submitted = task.first_submitted or time.monotonic()
                    options = {
                        "runtime_env": runtime_env(task.cell, threads, task_tag(matrix_run, task.cell, task.attempt)),
                        "num_cpus": threads,
                        "num_gpus": task.cell.gpus,
                        "max_retries": 0,  # a dead worker's task is resubmitted here, saying so
                        "name": f"cell {task.cell.id}",
                    }
                    running[self._task.options(**options).remote(task.cell, tracking_uri)] = task
                ready, _ = ray.wait(list(running), num_returns=1, timeout=STATUS_EVERY_S)
                if not ready:
                    waiting = ", ".join(sorted(task.cell.id for task in running.values()))
                    self.say(f"running: {waiting} ({time.monotonic() - last_news:.0f} s without a cell finishing)")
                    continue
                last_news = time.monotonic()
                task = running.pop(ready[0])
                result = self._result(ready[0], task, matrix_run, on_gone)
                if result is None:
                    queue.appendleft(_Submitted(task.cell, task.attempt + 1, task.first_submitted))
                    continue
                results.append(result)
                on_result(result)
                self.say(f"[{len(results)}/{len(cells)}] {_line(result)}")
        except BaseException as error:  # Ctrl-C, or a failure of the caller's on_result: no task left behind
            self._cancel(running, matrix_run, on_gone, "Ctrl-C" if isinstance(error, KeyboardInterrupt) else "an error")
            raise
        return results

    def _result(
        self, ref: Any, task: _Submitted, matrix_run: str, on_gone: Callable[[Cell, str, str], None]
    ) -> TaskResult | None:
        """The finished task's result, or None when it is to be submitted again (its worker died, first time)."""
        seconds = time.monotonic() - task.first_submitted
        try:
            record = ray.get(ref)
        except RuntimeEnvSetupError as error:
            return TaskResult(task.cell, Outcome.UNSUPPORTED, "", pip_reason(error), task.attempt, seconds)
        except WORKER_DIED as error:
            reason = f"its Ray worker died ({type(error).__name__}: {tail(str(error))})"
            on_gone(task.cell, task_tag(matrix_run, task.cell, task.attempt), reason)
            if task.attempt < ATTEMPTS:
                self.say(f"{task.cell.id}: {reason}; submitting it again (attempt {task.attempt + 1} of {ATTEMPTS})")
                return None
            reason = f"its Ray worker died on all {ATTEMPTS} attempts (the last: {type(error).__name__})"
            return TaskResult(task.cell, Outcome.ERROR, "", reason, task.attempt, seconds)
        except RayTaskError as error:  # the runner itself raised (a full disk on the node, say): no record
            reason = f"its task raised: {tail(str(error))}"
            return TaskResult(task.cell, Outcome.ERROR, "", reason, task.attempt, seconds)
        return TaskResult(task.cell, Outcome.RAN, record, "", task.attempt, seconds)

    def _cancel(
        self, running: dict[Any, _Submitted], matrix_run: str, on_gone: Callable[[Cell, str, str], None], why: str
    ) -> None:
        """Cancel every running task (its worker is killed, and the cell process with it), wait until Ray says they
        ended, then let ``on_gone`` end the runs they left RUNNING."""
        if running:
            self.say(f"stopped by {why}: cancelling {len(running)} running cell(s)")
        for ref in running:
            ray.cancel(ref, force=True)
        for ref, task in running.items():
            try:
                ray.get(ref, timeout=CANCEL_WAIT_S)
            except (TaskCancelledError, GetTimeoutError, RayTaskError, *WORKER_DIED):
                pass
            except RuntimeEnvSetupError:
                continue  # never started: no run to end
            on_gone(task.cell, task_tag(matrix_run, task.cell, task.attempt), f"cancelled by {why} on the driver")


def _line(result: TaskResult) -> str:
    """One progress line for a finished cell."""
    retried = f", after {result.attempts} attempts" if result.attempts > 1 else ""
    if result.outcome == Outcome.RAN:
        return f"{result.cell.id}: ran in {result.seconds:.0f} s{retried}"
    return f"{result.cell.id}: {result.outcome} ({result.reason}){retried}"
