"""The matrix on a real Ray cluster: a head and one worker node on loopback (``ray.cluster_utils.Cluster``: separate
raylet processes, one CPU each), audit cells as Ray tasks in their own ``runtime_env``, logging to a real ``mlflow
server``; the report built from the server, compared with the same cells run by nox."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from mlflow_helpers import Server, mlflow_server

from equiv_core.audit.record import CellRecord, cell_slug
from equiv_core.config.catalog import AUDIT_EXPERIMENT
from equiv_core.tracking.schema import Tag
from mlflow import MlflowClient

ray_cluster_utils = pytest.importorskip(
    "ray.cluster_utils", reason="Ray is the cluster extra: pip install -e '.[cluster]'"
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# Two cells that pin different nnsight releases (the reference cell and the release before it).
CELLS = ("nnsight='0.7.0'", "nnsight='0.8.1'")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A two-node Ray cluster on this machine: the head and one worker node, each a raylet with one CPU (so two
    cells run one per node), stopped afterwards. Its session directory (the nodes' cached cell environments, ~2 GB
    each) is removed with it."""
    started = ray_cluster_utils.Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    session = Path(started.head_node.get_session_dir_path())
    try:
        started.add_node(num_cpus=1)
        started.wait_for_nodes()
        yield started
    finally:
        started.shutdown()
        shutil.rmtree(session, ignore_errors=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("tracking")
    with mlflow_server(f"sqlite:///{directory / 'mlflow.db'}", directory / "artifacts") as running:
        yield running


def _matrix(cluster: Any, server: Server, results: Path, cells: tuple[str, ...], models: str) -> subprocess.Popen[str]:
    """``equiv matrix audit`` against the cluster and the server, as a user runs it."""
    command = [sys.executable, "-m", "equiv_core", "matrix", "audit", "--address", cluster.address]
    command += ["--tracking-uri", server.url, "--cells", ",".join(cells), "--models", models, "--results", str(results)]
    return subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen[str], timeout_s: float = 900) -> tuple[str, str]:
    stdout, stderr = process.communicate(timeout=timeout_s)
    return stdout, stderr


def _audit_runs(server: Server) -> list[Any]:
    client = MlflowClient(server.url)
    experiment = client.get_experiment_by_name(AUDIT_EXPERIMENT)
    if experiment is None:
        return []
    return list(client.search_runs([experiment.experiment_id], f"tags.{Tag.KIND} = 'audit-cell'", max_results=1000))


def _comparable(record: CellRecord) -> dict[str, Any]:
    """What must agree between two runs of one cell: every verdict and every token id, per model."""
    return {
        model: {
            "findings": {name: verdict.verdict for name, verdict in result.findings.items()},
            "recipes": {
                recipe: {name: verdict.verdict for name, verdict in findings.items()}
                for recipe, findings in result.recipes.items()
            },
            "pitfalls": {name: pitfall.outcome for name, pitfall in result.pitfalls.items()},
            "arm_ids": result.arm_ids(),
            "literal_edit": result.literal_output0_edit,
            "weights_sha256": result.weights_sha256,
        }
        for model, result in record.models.items()
    }


def test_audit_cells_as_ray_tasks_on_two_nodes_report_what_the_same_cells_run_by_nox_report(
    cluster: Any, server: Server, tmp_path: Path
) -> None:
    nox_results = tmp_path / "nox"
    environment = {
        **os.environ,
        "EQUIV_AUDIT_MODELS": "tiny-gpt2",
        "EQUIV_AUDIT_RESULTS": str(nox_results),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'nox-mlflow.db'}",
    }
    sessions = [f"audit_cell({cell})" for cell in CELLS]
    started = time.monotonic()
    # nox builds its two environments (pip, mostly waiting on the disk) while Ray runs the same cells: the two
    # engines do not share anything but the machine.
    by_nox_process = subprocess.Popen(
        [sys.executable, "-m", "nox", "-s", *sessions],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    stdout, stderr = _finish(_matrix(cluster, server, tmp_path / "ray", CELLS, "tiny-gpt2"))
    ray_s = time.monotonic() - started
    nox_output, _ = by_nox_process.communicate(timeout=1200)
    nox_s = time.monotonic() - started
    assert "audit report" in stderr or "REPORT" in stdout, stderr[-3000:]
    assert "read 2 audit cells from" in stderr, stderr[-3000:]
    from_server = {cell: CellRecord.read(tmp_path / "ray" / f"{cell_slug(cell)}.json") for cell in CELLS}
    assert by_nox_process.returncode == 0, nox_output[-3000:]
    by_nox = {cell: CellRecord.read(nox_results / f"{cell_slug(cell)}.json") for cell in CELLS}
    print(f"two cells, side by side: {ray_s:.0f} s on Ray, {nox_s:.0f} s by nox (environments built included)")

    for cell in CELLS:
        assert from_server[cell].status == by_nox[cell].status == "ran"
        assert from_server[cell].versions["nnsight"] == by_nox[cell].versions["nnsight"] == cell.split("'")[1]
        assert _comparable(from_server[cell]) == _comparable(by_nox[cell]), cell
    runs = _audit_runs(server)
    tasks = {run.data.tags[Tag.CELL]: run.data.tags.get(Tag.MATRIX_TASK, "") for run in runs}
    assert set(tasks) == set(CELLS) and all(task.endswith("/1") for task in tasks.values()), tasks


def _cell_process(cell: str) -> psutil.Process | None:
    """The running ``audit-cell`` process of ``cell``, if any."""
    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        if "audit-cell" in command and cell in command:
            return process
    return None


def _running_run(server: Server, cell: str, attempt: int, timeout_s: float = 600) -> Any:
    """Wait until the cell's run of that attempt is RUNNING on the server (the cell is mid-way)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for run in _audit_runs(server):
            task = run.data.tags.get(Tag.MATRIX_TASK, "")
            if run.data.tags.get(Tag.CELL) == cell and task.endswith(f"/{attempt}") and run.info.status == "RUNNING":
                return run
        time.sleep(0.2)
    raise AssertionError(f"no RUNNING run of {cell} attempt {attempt} within {timeout_s} s")


def test_a_ray_worker_killed_mid_cell_is_retried_once_and_its_dead_run_ended_killed(
    cluster: Any, server: Server, tmp_path: Path
) -> None:
    cell = "nnsight='0.8.1'"
    driver = _matrix(cluster, server, tmp_path / "ray", (cell,), "tiny-gpt2,tiny-llama")
    killed = _running_run(server, cell, attempt=1)
    process = _cell_process(cell)
    assert process is not None, "the cell's run is RUNNING but no audit-cell process was found"
    worker = process.parent()
    assert worker is not None
    worker.send_signal(signal.SIGKILL)  # the Ray worker running the task; the cell process dies with it
    gone, _alive = psutil.wait_procs([process], timeout=10)
    assert gone, "the cell process outlived its killed worker"
    _stdout, stderr = _finish(driver)

    assert driver.returncode == 0, stderr[-3000:]
    assert "its Ray worker died" in stderr and "submitting it again (attempt 2 of 2)" in stderr, stderr[-3000:]
    runs = {run.info.run_id: run for run in _audit_runs(server) if run.data.tags.get(Tag.CELL) == cell}
    assert runs[killed.info.run_id].info.status == "KILLED"
    assert "its Ray worker died" in runs[killed.info.run_id].data.tags[Tag.END_REASON]
    attempt = killed.data.tags[Tag.MATRIX_TASK].removesuffix("/1") + "/2"
    [retried] = [run for run in runs.values() if run.data.tags.get(Tag.MATRIX_TASK) == attempt]
    assert retried.info.status == "FINISHED"
    assert CellRecord.read(tmp_path / "ray" / f"{cell_slug(cell)}.json").status == "ran"


def test_ctrl_c_on_the_driver_cancels_the_cells_and_leaves_no_run_running(
    cluster: Any, server: Server, tmp_path: Path
) -> None:
    cell = "nnsight='0.7.0'"
    driver = _matrix(cluster, server, tmp_path / "ray", (cell,), "tiny-gpt2,tiny-llama")
    interrupted = _running_run(server, cell, attempt=1)
    process = _cell_process(cell)
    assert process is not None, "the cell's run is RUNNING but no audit-cell process was found"
    driver.send_signal(signal.SIGINT)
    _stdout, stderr = _finish(driver, timeout_s=120)

    assert driver.returncode == 130, stderr[-3000:]
    assert "cancelling 1 running cell(s)" in stderr, stderr[-3000:]
    run = MlflowClient(server.url).get_run(interrupted.info.run_id)
    assert run.info.status == "KILLED" and "cancelled by Ctrl-C" in run.data.tags[Tag.END_REASON]
    assert not [r for r in _audit_runs(server) if r.info.status == "RUNNING"]
    gone, _alive = psutil.wait_procs([process], timeout=30)
    assert gone, "the cancelled cell's process is still running"
