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
import signal
import socket
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
    RayError,
    RayTaskError,
    RuntimeEnvSetupError,
    WorkerCrashedError,
)

from equiv_core.cells.cell import Cell
from equiv_core.cells.runner import run_cell, tail
from equiv_core.support.errors import EnvironmentFault, UserInputError, first_line
from equiv_core.support.interrupts import deferred
from equiv_core.tracking.schema import MATRIX_TASK_ENV

SETUP_TIMEOUT_S = 1800  # building an environment that swaps torch downloads ~1 GB: minutes, not Ray's default 600 s
STATUS_EVERY_S = 60.0  # a line naming the running cells when none has finished for this long
CANCEL_WAIT_S = 30.0
ATTEMPTS = 2  # a task whose worker died is submitted once more
WORKER_DIED = (WorkerCrashedError, NodeDiedError, OutOfMemoryError)


class Outcome(enum.StrEnum):
    """How a cell's task ended: the cell ``ran`` (its record says what it found); it could not run here
    (``unsupported``: pip refused its pins, or its import failed); or it failed (``error``: its process crashed,
    its worker died on every attempt, its environment could not be set up for another reason)."""

    RAN = "ran"
    UNSUPPORTED = "unsupported"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class TaskResult:
    """One cell's task: ``record`` is the text of the record written on the node (its kind's JSON format; the
    runner's own record where the cell could not import or crashed), "" when the task gave none; ``reason`` one
    line when the cell did not run. ``seconds`` from the first submission, environment build included."""

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
    upgrade = ["--upgrade"] if cell.newest else []  # the node's environment already has the default's release
    return {
        "pip": {
            "packages": list(cell.requirements),
            "pip_install_options": ["--disable-pip-version-check", "--quiet", *upgrade],
        },
        "env_vars": {"OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", MATRIX_TASK_ENV: tag},
        "config": {"setup_timeout_seconds": SETUP_TIMEOUT_S},
    }


def _run_on_node(cell: Cell, tracking_uri: str | None) -> str:
    """The task: run ``cell`` with this environment's Python through the cell runner; the text of its record."""
    with tempfile.TemporaryDirectory(prefix="equiv-cell-") as out:
        record = run_cell(cell, Path(sys.executable), Path(out), os.environ, say=print, tracking_uri=tracking_uri)
        return record.read_text()


# What pip prints when the pins cannot be installed on this Python (the cell is `unsupported`, as under nox); any
# other failure to set an environment up (a timeout, a full disk, Ray's own check that it still imports) is an error.
PIP_REFUSALS = (
    "No matching distribution",
    "Could not find a version",
    "ResolutionImpossible",
    "conflicting dependencies",
    "subprocess-exited-with-error",
    "Failed building wheel",
)


def setup_failure(error: RuntimeEnvSetupError) -> tuple[Outcome, str]:
    """What a failed environment build means for its cell: ``unsupported`` with pip's last error line when pip
    refused the pins, else ``error`` (Ray's runtime-env agent tries a build 3 times, ``setup_timeout_seconds`` each:
    ray/_private/runtime_env/agent/runtime_env_agent.py, Ray 2.60)."""
    text = str(error)
    if any(refusal in text for refusal in PIP_REFUSALS):
        pip_errors = [line.strip() for line in text.splitlines() if line.strip().startswith("ERROR:")]
        return Outcome.UNSUPPORTED, f"install failed: {(pip_errors or [tail(text)])[-1][:400]}"
    return Outcome.ERROR, f"its environment could not be set up: {tail(text)}"


CONNECT_TIMEOUT_S = 10.0


def check_reachable(address: str) -> None:
    """Raise EnvironmentFault (one line) unless something answers at the cluster's ``HOST:PORT`` (or
    ``ray://HOST:PORT``): ``ray.init`` itself retries an unreachable GCS for ever, printing warnings (Ray 2.60)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UserInputError(f"--address {address!r}: valid: HOST:PORT of the Ray head (HOST:6379) or ray://HOST:10001")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise EnvironmentFault(
            f"cannot reach the Ray cluster at {address} ({error.strerror or error}): start its head with "
            "`ray start --head --port 6379`, or drop --address to run on this machine"
        ) from None


@dataclass
class _Submitted:
    cell: Cell
    attempt: int
    first_submitted: float


class RayEngine:
    """Runs cells on the Ray cluster at ``address``, shipping the ``equiv_core`` package at ``project`` to every
    node; ``address`` None starts a Ray of its own on this machine (``address="local"``), whose session directory
    (its cells' environments, ~2 GB each, never reused by a later Ray) is removed at :meth:`shutdown`. Raises
    EnvironmentFault (one line) when the cluster cannot be reached."""

    def __init__(self, address: str | None, project: Path, say: Callable[[str], None]) -> None:
        self.say = say
        if address is not None:
            check_reachable(address)
        # ray.init replaces SIGTERM's handler with sys.exit (ray/_private/worker.py, Ray 2.60): equiv's own (a
        # SIGTERM is an interrupt, exit 130, its runs ended KILLED) is put back.
        sigterm = signal.getsignal(signal.SIGTERM)
        try:
            ray.init(
                address=address or "local",
                runtime_env={"py_modules": [str(project)]},
                log_to_driver=False,  # each cell's output is in its record and MLflow run; progress is a line a cell
                include_dashboard=False if address is None else None,
                configure_logging=False,
            )
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise EnvironmentFault(
                f"cannot reach the Ray cluster at {address or 'local'}: {first_line(error)}"
            ) from None
        finally:
            if sigterm is not None:
                signal.signal(signal.SIGTERM, sigterm)
        context = ray.get_runtime_context()
        self._own_session = Path(context.get_temp_dir()) / context.get_session_name() if address is None else None
        self._task = ray.remote(_run_on_node)

    def check_fits(self, cells: list[Cell], threads: int) -> None:
        """Refuse cells no node can run (they would wait for ever): GPU cells on a cluster without a GPU
        (EnvironmentFault), more threads per cell than any node has CPUs (UserInputError)."""
        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]  # type: ignore[no-untyped-call]
        cpus = max((resources.get("CPU", 0.0) for resources in nodes), default=0.0)
        if threads > cpus:
            raise UserInputError(
                f"--threads {threads}: valid: 1 to {int(cpus)}, the most CPUs any node of the cluster has"
            )
        gpus = max((resources.get("GPU", 0.0) for resources in nodes), default=0.0)
        wanted = max((cell.gpus for cell in cells), default=0)
        if wanted > gpus:
            raise EnvironmentFault(
                f"{wanted} GPU(s) per cell asked for, and no node of the cluster has that many ({gpus:g}): start a "
                "node with `ray start ... --num-gpus 1` on a GPU machine, or pass --device cpu"
            )

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

        def keep(result: TaskResult) -> None:
            results.append(result)
            on_result(result)
            self.say(f"[{len(results)}/{len(cells)}] {_line(result)}")

        try:
            while queue or running:
                while queue and len(running) < max_running:
                    task = queue[0]
                    task.first_submitted = task.first_submitted or time.monotonic()
                    options = {
                        "runtime_env": runtime_env(task.cell, threads, task_tag(matrix_run, task.cell, task.attempt)),
                        "num_cpus": threads,
                        "num_gpus": task.cell.gpus,
                        "max_retries": 0,  # a dead worker's task is resubmitted here, saying so
                        "name": f"cell {task.cell.id}",
                    }
                    running[self._task.options(**options).remote(task.cell, tracking_uri)] = task
                    queue.popleft()  # only once it is in `running`: a Ctrl-C in between leaves nothing untracked
                ready, _ = ray.wait(list(running), num_returns=1, timeout=STATUS_EVERY_S)
                if not ready:
                    waiting = ", ".join(sorted(task.cell.id for task in running.values()))
                    self.say(f"running: {waiting} ({time.monotonic() - last_news:.0f} s without a cell finishing)")
                    continue
                last_news = time.monotonic()
                result = self._result(ready[0], running[ready[0]], matrix_run, on_gone)
                task = running.pop(ready[0])
                if result is None:
                    queue.appendleft(_Submitted(task.cell, task.attempt + 1, task.first_submitted))
                else:
                    keep(result)
        except BaseException as error:  # Ctrl-C, or a failure of the caller's on_result: no task left behind
            with deferred():  # a second Ctrl-C waits until every cancelled task's runs are ended
                why = "Ctrl-C" if isinstance(error, KeyboardInterrupt) else type(error).__name__
                self._cancel(running, matrix_run, on_gone, why, keep)
            raise
        return results

    def _result(
        self, ref: Any, task: _Submitted, matrix_run: str, on_gone: Callable[[Cell, str, str], None]
    ) -> TaskResult | None:
        """The finished task's result, or None when it is to be submitted again (its worker died, first time).
        ``ray.get`` raises the errors of ray/exceptions.py (Ray 2.60): a worker that died while running it
        (WorkerCrashedError; NodeDiedError, OutOfMemoryError), a runtime env that could not be built
        (RuntimeEnvSetupError), the task's own exception (RayTaskError), and other failures of Ray (RayError)."""
        seconds = time.monotonic() - task.first_submitted
        tag = task_tag(matrix_run, task.cell, task.attempt)
        try:
            record = ray.get(ref)
        except RuntimeEnvSetupError as error:
            outcome, reason = setup_failure(error)
            return TaskResult(task.cell, outcome, "", reason, task.attempt, seconds)
        except WORKER_DIED as error:
            reason = f"its Ray worker died ({type(error).__name__}: {tail(str(error))})"
            on_gone(task.cell, tag, reason)
            if task.attempt < ATTEMPTS:
                self.say(f"{task.cell.id}: {reason}; submitting it again (attempt {task.attempt + 1} of {ATTEMPTS})")
                return None
            reason = f"its Ray worker died on all {ATTEMPTS} attempts (the last: {type(error).__name__})"
            return TaskResult(task.cell, Outcome.ERROR, "", reason, task.attempt, seconds)
        except RayTaskError as error:  # the runner itself raised (a full disk on the node, say): no record
            on_gone(task.cell, tag, f"its task raised: {tail(str(error))}")
            return TaskResult(
                task.cell, Outcome.ERROR, "", f"its task raised: {tail(str(error))}", task.attempt, seconds
            )
        except RayError as error:  # cancelled from outside, unschedulable, its result lost, ...
            reason = f"Ray could not run it ({type(error).__name__}: {tail(str(error))})"
            on_gone(task.cell, tag, reason)
            return TaskResult(task.cell, Outcome.ERROR, "", reason, task.attempt, seconds)
        status, reason = task.cell.outcome_of(record)
        return TaskResult(task.cell, Outcome(status), record, reason, task.attempt, seconds)

    def _cancel(
        self,
        running: dict[Any, _Submitted],
        matrix_run: str,
        on_gone: Callable[[Cell, str, str], None],
        why: str,
        keep: Callable[[TaskResult], None],
    ) -> None:
        """Cancel every running task (``force``: its worker is killed, and the cell process with it), wait once for
        all of them, keep the result of any that finished meanwhile, and let ``on_gone`` end the runs of the rest."""
        if not running:
            return
        self.say(f"stopped by {why}: cancelling {len(running)} running cell(s)")
        for ref in running:
            ray.cancel(ref, force=True)
        ray.wait(list(running), num_returns=len(running), timeout=CANCEL_WAIT_S)
        for ref, task in running.items():
            try:
                record = ray.get(ref, timeout=0)
            except (RuntimeEnvSetupError, GetTimeoutError, RayError):
                on_gone(task.cell, task_tag(matrix_run, task.cell, task.attempt), f"cancelled by {why} on the driver")
                continue
            status, reason = task.cell.outcome_of(record)
            seconds = time.monotonic() - task.first_submitted
            keep(TaskResult(task.cell, Outcome(status), record, reason, task.attempt, seconds))


def _line(result: TaskResult) -> str:
    """One progress line for a finished cell."""
    retried = f", after {result.attempts} attempts" if result.attempts > 1 else ""
    if result.outcome == Outcome.RAN:
        return f"{result.cell.id}: ran in {result.seconds:.0f} s{retried}"
    return f"{result.cell.id}: {result.outcome} ({result.reason}) after {result.seconds:.0f} s{retried}"
