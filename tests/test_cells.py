"""A matrix's cells and the one cell runner nox and Ray both call: what a cell pins and runs, the records of cells
that could not run, the runner's failure records and its cell process dying with its parent, the Ray task's
environment, ``equiv matrix``'s refusals, and the runs a dead task left RUNNING ended by the driver."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from equiv_core.audit.bisect import read_searches
from equiv_core.audit.record import CellRecord, CellStatus
from equiv_core.cells.cell import (
    BenchSetting,
    CellKind,
    NotRun,
    audit_cell,
    bench_cell,
    conformance_cell,
    matrix,
    pinned_versions,
    requirement,
    sweep_cells,
    too_old,
)
from equiv_core.cells.runner import run_cell
from equiv_core.cli.main import build_parser, main
from equiv_core.conformance.matrix import environment
from equiv_core.conformance.record import EnvironmentRecord, EnvironmentStatus
from equiv_core.jobs.matrix import sweep_report
from equiv_core.support.errors import EnvironmentFault, UserInputError
from equiv_core.tracking.schema import MATRIX_TASK_ENV, Tag
from equiv_core.tracking.store import Tracker
from mlflow import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
DEFAULTS = {"nnsight": "0.8.1", "transformers": "5.24.0", "torch": "2.13.0", "mlflow": "3.18.0"}


def test_an_audit_cell_runs_the_default_pins_with_its_one_change() -> None:
    cell = audit_cell("nnsight='0.7.0'", {"nnsight": "0.7.0"}, DEFAULTS, ("tiny-gpt2",))
    assert cell.requirements == ("nnsight==0.7.0", "transformers==5.24.0", "torch==2.13.0", "mlflow==3.18.0")
    arguments = cell.arguments(Path("out"), "http://head:5000")
    assert arguments[:3] == ["audit-cell", "--cell", "nnsight='0.7.0'"]
    assert "--pin=nnsight=0.7.0" in arguments and "--pin=torch=2.13.0" in arguments
    assert arguments[-4:] == ["--tracking-uri", "http://head:5000", "--experiment", "equiv-audit"]
    assert "--tracking-uri" not in cell.arguments(Path("out"))  # nox: the cell's own default store


def test_a_latest_pin_asks_pip_for_the_newest_release_and_records_latest() -> None:
    cell = audit_cell("transformers='latest'", {"transformers": None}, DEFAULTS)
    assert requirement("transformers", None) == "transformers" and "transformers" in cell.requirements
    assert "--pin=transformers=latest" in cell.arguments(Path("out"))


def test_a_conformance_cell_keeps_the_librarys_own_pins_over_the_default_ones() -> None:
    library = environment("steering-vectors-0.12.2")
    cell = conformance_cell(library, DEFAULTS, ("tiny-gpt2",))
    assert "transformers" not in cell.pins  # steering-vectors names its own transformers
    assert cell.requirements[: len(library.requirements)] == library.requirements
    assert "nnsight==0.8.1" in cell.requirements
    assert cell.arguments(Path("out"))[:3] == ["conformance-cell", "--environment", "steering-vectors-0.12.2"]


def test_the_bench_matrix_is_the_gpu_record_one_gpu_per_cell() -> None:
    cells = matrix(CellKind.BENCH, DEFAULTS)
    assert [cell.id for cell in cells] == [
        "bench gpt2-small-random float32 cuda",
        "bench gpt2-small-random bfloat16 cuda",
    ]
    assert all(
        cell.gpus == 1 and cell.requirements == tuple(f"{p}=={v}" for p, v in DEFAULTS.items()) for cell in cells
    )
    cpu = bench_cell("tiny-gpt2", BenchSetting("float32", "cpu", (2, 4)), DEFAULTS)
    assert cpu.gpus == 0
    assert cpu.arguments(Path("out"))[:10] == [
        "bench", "--model", "tiny-gpt2", "--dtype", "float32", "--device", "cpu", "--new-tokens", "2,4", "--json"
    ]  # fmt: skip


@pytest.mark.parametrize("kind", list(CellKind))
def test_every_kind_of_cell_runs_a_command_equiv_accepts(kind: CellKind) -> None:
    """A cell's command line is parsed by the real `equiv` parser: an option renamed there fails here, not on a
    cluster node."""
    for cell in matrix(kind, DEFAULTS):
        parsed = build_parser().parse_args(cell.arguments(Path("out"), "http://head:5000"))
        assert parsed.command == {"audit": "audit-cell", "conformance": "conformance-cell", "bench": "bench"}[kind]
        assert parsed.tracking_uri == "http://head:5000"


def test_the_matrix_refuses_a_cell_it_does_not_have_naming_the_valid_ones() -> None:
    assert [cell.id for cell in matrix(CellKind.AUDIT, DEFAULTS, only=("nnsight='0.7.0'",))] == ["nnsight='0.7.0'"]
    with pytest.raises(ValueError, match=r"no audit cell 'nnsight=0\.7'; valid: nnsight='0\.4\.11', "):
        matrix(CellKind.AUDIT, DEFAULTS, only=("nnsight=0.7",))


def test_pins_are_read_from_constraints_and_a_missing_pin_is_named(tmp_path: Path) -> None:
    assert pinned_versions(ROOT / "constraints.txt")["nnsight"] == "0.8.1"
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("torch==2.13.0\n")
    with pytest.raises(ValueError, match="nnsight is not pinned in"):
        pinned_versions(constraints)


def test_a_cell_that_could_not_run_gets_its_kinds_record_and_loses_older_logits(tmp_path: Path) -> None:
    cell = audit_cell("nnsight='0.7.0'", {"nnsight": "0.7.0"}, DEFAULTS)
    (tmp_path / f"{cell.slug}.npz").write_bytes(b"an older run's logits")
    record = CellRecord.read(cell.record_not_run(NotRun.UNSUPPORTED, "install failed: no such version", tmp_path))
    assert (record.status, record.reason, record.pins["nnsight"]) == (
        CellStatus.UNSUPPORTED,
        "install failed: no such version",
        "0.7.0",
    )
    assert not (tmp_path / f"{cell.slug}.npz").exists()
    library = conformance_cell(environment("pyvene-0.1.8"), DEFAULTS)
    written = EnvironmentRecord.read(library.record_not_run(NotRun.ERROR, "its Ray worker died", tmp_path))
    assert (written.environment, written.status, written.reason) == (
        "pyvene-0.1.8",
        EnvironmentStatus.ERROR,
        "its Ray worker died",
    )


def _fake_python(tmp_path: Path, on_check: str, on_cell: str) -> Path:
    """An interpreter stand-in for an environment without torchvision: prints ``on_check`` and exits 1 when given
    ``-c`` (the import check) unless it is empty, and does the same with ``on_cell`` for ``-m equiv_core ...``."""
    script = tmp_path / "python"
    script.write_text(
        textwrap.dedent(f"""\
            #!/bin/sh
            case "$2" in *torchvision*) echo "ModuleNotFoundError: No module named 'torchvision'"; exit 1;; esac
            if [ "$1" = "-c" ]; then message={json.dumps(on_check)}; else message={json.dumps(on_cell)}; fi
            if [ -n "$message" ]; then echo "some output"; echo "$message"; exit 1; fi
            exit 0
            """)
    )
    script.chmod(0o755)
    return script


@pytest.mark.integration
def test_the_runner_records_an_environment_whose_import_fails_as_unsupported(tmp_path: Path) -> None:
    cell = audit_cell("nnsight='0.4.11'", {"nnsight": "0.4.11"}, DEFAULTS)
    python = _fake_python(tmp_path, "ImportError: cannot import name 'Envoy'", "")
    said: list[str] = []
    record = CellRecord.read(run_cell(cell, python, tmp_path / "out", os.environ, said.append))
    assert record.status == CellStatus.UNSUPPORTED
    assert record.reason == "import failed: ImportError: cannot import name 'Envoy'"
    assert said == ["nnsight='0.4.11': unsupported (import failed)"]


@pytest.mark.integration
def test_the_runner_records_a_crashed_cell_as_an_error_with_its_last_error_line(tmp_path: Path) -> None:
    cell = audit_cell("nnsight='0.7.0'", {"nnsight": "0.7.0"}, DEFAULTS)
    python = _fake_python(tmp_path, "", "RuntimeError: CUDA error: out of memory")
    record = CellRecord.read(run_cell(cell, python, tmp_path / "out", os.environ, lambda _line: None))
    assert (record.status, record.reason) == (
        CellStatus.ERROR,
        "audit-cell crashed: RuntimeError: CUDA error: out of memory",
    )


@pytest.mark.integration
def test_a_bench_cell_whose_arms_disagree_ran_and_keeps_its_json(tmp_path: Path) -> None:
    """`equiv bench` exits 1 when an arm is incorrect, with its JSON written: a result, not a crash."""
    cell = bench_cell("tiny-gpt2", BenchSetting("float32", "cpu", (2,)), DEFAULTS)
    out = tmp_path / "out"
    script = tmp_path / "python"
    script.write_text(f"#!/bin/sh\nprintf '{{\"cells\": []}}' > {out / (cell.slug + '.json')}\nexit 1\n")
    script.chmod(0o755)
    record = run_cell(cell, script, out, os.environ, lambda _line: None)
    assert cell.outcome_of(record.read_text()) == ("ran", "")


@pytest.mark.integration
def test_a_cell_that_exits_0_without_its_record_is_an_error(tmp_path: Path) -> None:
    cell = audit_cell("nnsight='0.7.0'", {"nnsight": "0.7.0"}, DEFAULTS)
    record = run_cell(cell, _fake_python(tmp_path, "", ""), tmp_path / "out", os.environ, lambda _line: None)
    assert cell.outcome_of(record.read_text()) == ("error", "audit-cell wrote no record: no output")


@pytest.mark.integration
def test_a_cell_process_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """A Ray worker killed mid-cell must not leave its cell running (and logging) beside the retry."""
    child_pid = tmp_path / "child.pid"
    parent = textwrap.dedent(f"""\
        import sys
        from pathlib import Path
        from equiv_core.cells.runner import run_python
        code = "import os, time; open({str(child_pid)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
        run_python(Path(sys.executable), ["-c", code], {{}})
        """)
    process = subprocess.Popen([sys.executable, "-c", parent])
    deadline = time.monotonic() + 60
    while not (child_pid.is_file() and child_pid.read_text()):
        assert time.monotonic() < deadline, "the cell process never started"
        time.sleep(0.05)
    child = psutil.Process(int(child_pid.read_text()))
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    gone, _alive = psutil.wait_procs([child], timeout=10)
    assert gone, "the cell process outlived the process that started it"


def test_a_release_older_than_the_harness_supports_is_refused_without_an_environment() -> None:
    assert too_old("nnsight", "0.3.9") == (
        "older than the harness supports (nnsight >= 0.4.0: equiv_core.config.catalog.MIN_RELEASE)"
    )
    assert too_old("nnsight", "0.4.0") == too_old("transformers", "4.0.0") == ""


def test_a_release_sweep_on_ray_writes_the_search_record_nox_writes(tmp_path: Path) -> None:
    """The sweep's cells ran as Ray tasks; its search record (read by the report, as nox's) is built from their
    records: the release refused up front counts no environment, a release whose cell errored is stepped over."""
    directory = tmp_path / "releases" / "sweep-nnsight"
    refused, ran, errored = sweep_cells("nnsight", ["0.3.9", "0.7.0", "0.8.1"], DEFAULTS)
    assert ran.source == "sweep-nnsight" and ran.models == ("tiny-gpt2",)
    refused.record_not_run(NotRun.UNSUPPORTED, too_old("nnsight", "0.3.9"), directory)
    CellRecord(ran.id, CellStatus.RAN, pins=dict(ran.pins)).write(directory)
    errored.record_not_run(NotRun.ERROR, "its Ray worker died on all 2 attempts", directory)

    seconds = {"0.7.0": 30.0, "0.8.1": 12.0}
    assert sweep_report("nnsight", ["0.3.9", "0.7.0", "0.8.1"], directory, seconds, tmp_path) == 0
    [search] = read_searches(tmp_path)
    assert (search.source, search.versions, search.environments) == ("sweep-nnsight", ("0.3.9", "0.7.0", "0.8.1"), 2)
    assert [(probe.version, probe.status, probe.built) for probe in search.probes] == [
        ("0.3.9", "unsupported", False),
        ("0.7.0", "ran", True),
        ("0.8.1", "error", True),
    ]


def test_a_cells_ray_task_asks_pip_for_its_requirements_and_tags_its_runs() -> None:
    ray_engine = pytest.importorskip("equiv_core.cells.ray_engine", reason="Ray is the cluster extra")
    cell = audit_cell("nnsight='0.7.0'", {"nnsight": "0.7.0"}, DEFAULTS)
    tag = ray_engine.task_tag("20261207T120000Z-abc123", cell, 2)
    environment_ = ray_engine.runtime_env(cell, threads=3, tag=tag)
    assert tag == "20261207T120000Z-abc123/nnsight-0.7.0/2"
    assert environment_["pip"]["packages"] == list(cell.requirements)
    assert environment_["env_vars"] == {"OMP_NUM_THREADS": "3", "HF_HUB_OFFLINE": "1", MATRIX_TASK_ENV: tag}
    assert "--upgrade" not in environment_["pip"]["pip_install_options"]


def test_a_latest_pin_makes_rays_pip_upgrade_over_the_nodes_release() -> None:
    """The node's environment, which Ray copies, already has the default's transformers: without --upgrade pip
    would keep it and the `latest` cell would audit the default release."""
    ray_engine = pytest.importorskip("equiv_core.cells.ray_engine", reason="Ray is the cluster extra")
    cell = audit_cell("transformers='latest'", {"transformers": None}, DEFAULTS)
    assert cell.newest and "--upgrade" in ray_engine.runtime_env(cell, 1, "m/t/1")["pip"]["pip_install_options"]


def _finished_task(
    monkeypatch: pytest.MonkeyPatch, raised: BaseException, attempt: int = 1
) -> tuple[object, list[str]]:
    """What the engine makes of a task whose ``ray.get`` raised ``raised`` (no cluster: ``ray.get`` replaced), and
    the tags whose runs it asked to end."""
    ray_engine = pytest.importorskip("equiv_core.cells.ray_engine", reason="Ray is the cluster extra")

    def get(_ref: object, timeout: float | None = None) -> str:
        raise raised

    monkeypatch.setattr(ray_engine.ray, "get", get)
    engine = ray_engine.RayEngine.__new__(ray_engine.RayEngine)
    engine.say = lambda _line: None
    gone: list[str] = []
    cell = audit_cell("nnsight='0.7.0'", {"nnsight": "0.7.0"}, DEFAULTS)
    task = ray_engine._Submitted(cell, attempt, time.monotonic())
    result = engine._result(object(), task, "m1", lambda _cell, tag, _reason: gone.append(tag))
    return result, gone


@pytest.mark.parametrize(
    ("threads", "matrix_kind", "refusal"),
    [
        (1, CellKind.BENCH, "1 GPU(s) per cell asked for, and no node of the cluster has that many (0)"),
        (9, CellKind.AUDIT, "--threads 9: valid: 1 to 8, the most CPUs any node of the cluster has"),
    ],
)
def test_cells_no_node_can_run_are_refused_instead_of_waiting_for_ever(
    threads: int, matrix_kind: CellKind, refusal: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ray_engine = pytest.importorskip("equiv_core.cells.ray_engine", reason="Ray is the cluster extra")
    nodes = [{"Alive": True, "Resources": {"CPU": 8.0}}, {"Alive": True, "Resources": {"CPU": 4.0}}]
    monkeypatch.setattr(ray_engine.ray, "nodes", lambda: nodes)
    engine = ray_engine.RayEngine.__new__(ray_engine.RayEngine)
    with pytest.raises((EnvironmentFault, UserInputError), match=re.escape(refusal)):
        engine.check_fits(matrix(matrix_kind, DEFAULTS), threads)
    engine.check_fits(matrix(CellKind.AUDIT, DEFAULTS), threads=8)  # fits the larger node


def test_pip_refusing_a_cells_pins_makes_it_unsupported_with_pips_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.exceptions import RuntimeEnvSetupError

    pip = "ERROR: Could not find a version that satisfies the requirement nnsight==9.9\nERROR: No matching distribution"
    result, gone = _finished_task(monkeypatch, RuntimeEnvSetupError(pip))
    assert (result.outcome, result.reason, gone) == (
        "unsupported",
        "install failed: ERROR: No matching distribution",
        [],
    )


def test_an_environment_that_timed_out_is_an_error_not_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.exceptions import RuntimeEnvSetupError

    result, _gone = _finished_task(monkeypatch, RuntimeEnvSetupError("asyncio.exceptions.TimeoutError"))
    assert result.outcome == "error" and result.reason.startswith("its environment could not be set up: ")


def test_a_dead_worker_ends_its_runs_and_is_retried_once_then_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.exceptions import WorkerCrashedError

    first, gone = _finished_task(monkeypatch, WorkerCrashedError(), attempt=1)
    assert first is None and gone == ["m1/nnsight-0.7.0/1"]
    second, gone = _finished_task(monkeypatch, WorkerCrashedError(), attempt=2)
    assert second.outcome == "error" and gone == ["m1/nnsight-0.7.0/2"]
    assert second.reason == "its Ray worker died on all 2 attempts (the last: WorkerCrashedError)"


def test_any_other_ray_failure_is_an_error_cell_with_its_runs_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.exceptions import TaskCancelledError

    result, gone = _finished_task(monkeypatch, TaskCancelledError())
    assert result.outcome == "error" and result.reason.startswith("Ray could not run it (TaskCancelledError")
    assert gone == ["m1/nnsight-0.7.0/1"]


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        (["--cells", "nnsight=0.7"], "--cells: no audit cell 'nnsight=0.7'; valid: nnsight='0.4.11'"),
        (["--max-running", "0"], "--max-running 0: valid: an integer >= 1"),
        (["--address", "head:6379"], "cells on other nodes need a store every node reaches"),
        (["--dtypes", "float32"], "--dtypes sets what `equiv matrix bench` times: valid only there"),
        (["--models", "tiny-gpt2,./my-model"], "--models './my-model': valid: the built-in models, "),
    ],
)
def test_equiv_matrix_refuses_bad_arguments_in_one_line_before_starting_ray(
    arguments: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command = ["matrix", "audit", "--tracking-uri", f"sqlite:///{tmp_path / 'db'}", *arguments]
    assert main(command) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and says in error
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


@pytest.mark.parametrize(
    ("arguments", "says"),
    [
        (["--dtypes", "float64"], "--dtypes 'float64': valid: comma-separated float32, bfloat16, float16"),
        (["--new-tokens", "0"], "--new-tokens '0': valid: integers >= 1"),
        (["--cells", "bench gpt2 float32 cuda"], "--cells: no bench cell 'bench gpt2 float32 cuda'; valid: "),
    ],
)
def test_equiv_matrix_bench_refuses_what_equiv_bench_would_refuse_before_starting_ray(
    arguments: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["matrix", "bench", "--tracking-uri", f"sqlite:///{tmp_path / 'db'}", *arguments]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and says in error


def test_an_unreachable_ray_cluster_is_one_line_not_ray_retrying_for_ever(tmp_path: Path) -> None:
    ray_engine = pytest.importorskip("equiv_core.cells.ray_engine", reason="Ray is the cluster extra")
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(EnvironmentFault, match=rf"cannot reach the Ray cluster at 127\.0\.0\.1:{port} \("):
        ray_engine.RayEngine(f"127.0.0.1:{port}", ROOT / "src" / "equiv_core", lambda _line: None)
    with pytest.raises(UserInputError, match="--address 'head': valid: HOST:PORT"):
        ray_engine.check_reachable("head")


def test_a_release_sweep_refuses_cells_of_its_own_choosing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    command = ["matrix", "sweep-nnsight", "--tracking-uri", f"sqlite:///{tmp_path / 'db'}", "--cells", "x"]
    assert main(command) == 2
    assert "sweep-nnsight runs every release from the package index; drop --cells" in capsys.readouterr().err


def test_a_run_opened_in_a_ray_task_carries_the_task_and_the_driver_ends_it_when_the_task_is_gone(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MATRIX_TASK_ENV, "m1/nnsight-0.7.0/1")
    tracker = Tracker(store, "equiv-audit").connect()
    with tracker.run("audit nnsight='0.7.0'") as finished:
        pass
    client = MlflowClient(store)
    assert client.get_run(finished.run_id).data.tags[Tag.MATRIX_TASK] == "m1/nnsight-0.7.0/1"
    dead = client.create_run(tracker.experiment_id, tags={Tag.MATRIX_TASK: "m1/nnsight-0.7.0/1"}).info.run_id
    retry = client.create_run(tracker.experiment_id, tags={Tag.MATRIX_TASK: "m1/nnsight-0.7.0/2"}).info.run_id

    assert tracker.end_task_runs("m1/nnsight-0.7.0/1", "KILLED", "its Ray worker died") == [dead]
    assert client.get_run(dead).info.status == "KILLED"
    assert client.get_run(dead).data.tags[Tag.END_REASON] == "its Ray worker died"
    assert client.get_run(retry).info.status == "RUNNING"  # the retry's run is its own task's
    assert client.get_run(finished.run_id).info.status == "FINISHED"
