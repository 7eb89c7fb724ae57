"""Fault injection: what a command does when its environment fails (unwritable outputs, a full disk, a broken
model cache, a tracking store that dies mid-run, a process killed outright, another thread count).

Every case asserts the exit status (2 bad input, 3 environment fault), one ``equiv: error:`` line and no
traceback, the state of the output files and the state of the MLflow runs. The model-cache damage kinds are
covered one by one in test_model_cache.py; here the real SmolLM2 cache is damaged under the CLI.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException
from mlflow_helpers import mlflow_server, parent_and_children

from equiv_core.cli.main import main
from equiv_core.models import load as models
from equiv_core.models.cache import problem_with
from equiv_core.support import outputs
from equiv_core.tracking.compare import natural_key
from equiv_core.tracking.orphans import Owner, gone_reason, now_ms, this_process
from equiv_core.tracking.schema import Tag
from equiv_core.tracking.store import Tracker, _retry_locked
from mlflow import MlflowClient

pytestmark = pytest.mark.faults
TINY_RUN = ["run", "--model", "tiny-gpt2"]


def _error_line(stderr: str) -> str:
    """The one ``equiv: error:`` line of ``stderr`` (asserting there is exactly one and no traceback)."""
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("equiv: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def _runs(uri: str) -> list[tuple[str, str]]:
    """(status, name) of every run in the default experiment, newest first."""
    return [(run.status, run.name) for run in Tracker(uri).connect().runs()]


# --- outputs -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--json", "/proc/equiv-bench.json"], "--json '/proc/equiv-bench.json': cannot write in '/proc' ("),
        (["--json", "/sys/equiv-bench.json"], "--json '/sys/equiv-bench.json': cannot write in '/sys'"),
        (["--recipe", "actadd-all", "--plot", "/proc/map.png"], "--plot '/proc/map.png': cannot write"),
    ],
    ids=["json-in-proc", "json-in-sys", "plot-in-proc"],
)
def test_an_unwritable_output_is_bad_input_before_any_run(
    flags: list[str], message: str, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*TINY_RUN, *flags]) == 2
    assert message in _error_line(capsys.readouterr().err)
    assert _runs(store) == []


def test_a_new_json_file_gets_the_umask_mode_and_a_replaced_one_keeps_its_mode(tmp_path: Path) -> None:
    new, existing = tmp_path / "new.json", tmp_path / "existing.json"
    existing.write_text("{}")
    existing.chmod(0o640)
    previous = os.umask(0o022)
    try:
        assert main([*TINY_RUN, "--only", "steered_differs", "--no-mlflow", "--json", str(new)]) == 0
        assert main([*TINY_RUN, "--only", "steered_differs", "--no-mlflow", "--json", str(existing)]) == 0
    finally:
        os.umask(previous)
    assert new.stat().st_mode & 0o777 == 0o644
    assert existing.stat().st_mode & 0o777 == 0o640
    assert json.loads(existing.read_text())["model"] == "tiny-gpt2"


def test_a_full_disk_while_writing_json_is_exit_3_and_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "out.json"
    target.write_text("previous results\n")

    def no_space(*_args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outputs.os, "replace", no_space)
    assert main([*TINY_RUN, "--only", "steered_differs", "--no-mlflow", "--json", str(target)]) == 3
    line = _error_line(capsys.readouterr().err)
    assert f"cannot write {target}: No space left on device (the previous file, if any, is unchanged)" in line
    assert target.read_text() == "previous results\n"
    assert [path.name for path in tmp_path.iterdir()] == ["out.json"]


# --- the tracking store --------------------------------------------------------------------------------------


def test_a_store_whose_disk_fills_at_the_start_names_the_root_cause_in_one_line(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """MLflow's SQLite store wraps sqlite3's "database or disk is full" in SQLAlchemy and MLflow errors, and logs it
    with a traceback first: the user gets one line with the root cause, no traceback, and the results spooled."""
    import logging
    import sqlite3

    def full_disk(*_args: object, **_kwargs: object) -> None:
        try:
            try:
                raise sqlite3.OperationalError("database or disk is full")
            except sqlite3.OperationalError as cause:
                raise RuntimeError(
                    "(raised as a result of Query-invoked autoflush; consider using a session.no_autoflush block)\n"
                    "(sqlite3.OperationalError) database or disk is full"
                ) from cause
        except RuntimeError as wrapped:
            logging.getLogger("mlflow.store.db.utils").exception("SQLAlchemy database error. The following ...")
            raise MlflowException(f"(raised as a result of Query-invoked autoflush; ...)\n{wrapped}") from wrapped

    monkeypatch.setattr(MlflowClient, "create_run", full_disk)
    assert main([*TINY_RUN, "--only", "steered_differs"]) == 3
    captured = capsys.readouterr()
    line = _error_line(captured.err)
    assert "failed during the run (OperationalError: database or disk is full)" in line
    assert "SQLAlchemy database error" not in captured.err


def test_the_root_cause_of_a_chained_store_error_is_what_the_line_names() -> None:
    import sqlite3

    from equiv_core.tracking.store import _failure_line

    try:
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as cause:
            raise MlflowException("(raised as a result of Query-invoked autoflush)") from cause
    except MlflowException as error:
        assert _failure_line(error) == "OperationalError: database or disk is full"


def test_a_spool_that_cannot_be_written_leaves_no_empty_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from equiv_core.tracking import spool

    def no_space(*_args: object, **_kwargs: object) -> str:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(spool.tempfile, "mkdtemp", no_space)
    root = tmp_path / "mlflow" / "spool"
    with pytest.raises(OSError):
        spool.Journal().spool(root, "sqlite:///x.db", "equiv-bench", "disk full")
    assert not root.exists()


def test_a_store_failing_mid_run_keeps_report_json_and_results_then_uploads(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The store starts refusing writes after the second finding: the command still prints its report and writes
    its JSON, spools what the store missed, says how to upload it, and exits 3; the upload recreates the run."""
    real_log_batch = MlflowClient.log_batch
    calls = {"log_batch": 0}

    def failing_log_batch(client: MlflowClient, *args: object, **kwargs: object) -> None:
        calls["log_batch"] += 1
        if calls["log_batch"] > 4:
            raise MlflowException("API request to http://tracking/api/2.0/mlflow/runs/log-batch failed: refused")
        real_log_batch(client, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(MlflowClient, "log_batch", failing_log_batch)
    target = tmp_path / "out.json"
    assert main([*TINY_RUN, "--json", str(target)]) == 3
    captured = capsys.readouterr()
    assert "5/5 findings hold" in captured.out
    assert json.loads(target.read_text())["model"] == "tiny-gpt2"
    line = _error_line(captured.err)
    assert (
        "failed during the run (MlflowException: API request to http://tracking/api/2.0/mlflow/runs/log-batch "
        "failed: refused)" in line
    )
    spooled = Path(line.split("`equiv runs --upload ")[1].rstrip("`"))
    assert (spooled / "journal.json").is_file()

    monkeypatch.setattr(MlflowClient, "log_batch", real_log_batch)
    assert main(["runs", "--upload", str(spooled)]) == 0
    uploaded, original = parent_and_children(store)
    assert uploaded[0].info.status == "FINISHED"
    assert uploaded[0].data.tags["finding.steered_differs"] == "PASS"
    assert sorted(child.data.params["finding"] for child in uploaded[1]) == sorted(
        finding["id"] for finding in json.loads(target.read_text())["findings"]
    )
    assert original[0].info.status == "FAILED"
    assert "uploaded as" in original[0].data.tags[Tag.END_REASON]
    capsys.readouterr()
    assert main(["runs", "--upload", str(spooled)]) == 2
    assert "was uploaded already" in _error_line(capsys.readouterr().err)


def test_lock_retries_say_one_line_each() -> None:
    said: list[str] = []
    attempts = iter([RuntimeError("(sqlite3.OperationalError) database is locked")] * 2)

    def action() -> str:
        error = next(attempts, None)
        if error is not None:
            raise error
        return "done"

    assert _retry_locked(action, said.append) == "done"
    assert [line.count("\n") for line in said] == [0, 0]
    assert said[0].startswith("the MLflow store is locked by another writer; retry 2/8")


def test_an_empty_experiment_name_is_bad_input(unused_store: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", "--experiment", " "]) == 2
    assert "--experiment must be a non-empty MLflow experiment name" in _error_line(capsys.readouterr().err)
    assert not Path(unused_store.removeprefix("sqlite:///")).exists()


# --- orphaned runs -------------------------------------------------------------------------------------------


def _run_owned_by(uri: str, owner: Owner, name: str) -> str:
    tracker = Tracker(uri).connect()
    run = tracker.client.create_run(tracker.experiment_id, run_name=name, tags={Tag.OWNER: owner.to_tag()})
    return str(run.info.run_id)


def test_a_run_whose_process_is_gone_is_skipped_by_compare_and_ended_by_gc(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(2):
        assert main([*TINY_RUN, "--only", "steered_differs"]) == 0
    me = this_process()
    alive = _run_owned_by(store, me, "still running")
    # The same pid with another start time: the pid was reused, the owner is gone.
    orphan = _run_owned_by(store, Owner(me.host, me.pid, me.started - 3600), "killed")
    capsys.readouterr()

    assert main(["compare"]) == 0
    captured = capsys.readouterr()
    assert f"passed over newer runs that did not finish: {orphan[:8]} running (orphaned:" in captured.err
    assert "still running" not in captured.out and "killed" not in captured.out

    assert main(["runs"]) == 0
    listed = capsys.readouterr().out
    assert f"{orphan}  " in listed and "RUNNING (orphaned)" in listed

    assert main(["runs", "--gc"]) == 0
    assert f"marked 1 orphaned run(s) FAILED: {orphan}" in capsys.readouterr().err
    client = MlflowClient(store)
    assert client.get_run(orphan).info.status == "FAILED"
    assert "has ended without ending the run" in client.get_run(orphan).data.tags[Tag.END_REASON]
    assert client.get_run(alive).info.status == "RUNNING"


def test_a_run_from_another_host_is_orphaned_only_when_its_heartbeat_is_stale() -> None:
    owner = Owner("another-host", 4242, 1.0)
    now = now_ms()
    assert gone_reason(owner, now - 5 * 60_000, now) == ""
    assert gone_reason(owner, now - 11 * 60_000, now) == "no heartbeat from another-host (pid 4242) for 11 min"
    assert gone_reason(owner, None, now) == ""


def test_compare_sorts_sizes_as_numbers() -> None:
    cells = ["hook x16", "hook x8", "hook x32", "hook x1", "plain x8"]
    assert sorted(cells, key=natural_key) == ["hook x1", "hook x8", "hook x16", "hook x32", "plain x8"]


def test_compare_shows_a_finding_in_one_run_only_as_absent(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*TINY_RUN, "--only", "steered_differs"]) == 0
    assert main([*TINY_RUN, "--only", "steered_differs,iter0_equivalence"]) == 0
    capsys.readouterr()
    assert main(["compare"]) == 0
    printed = capsys.readouterr().out
    [verdicts] = [line for line in printed.splitlines() if line.startswith("iter0_equivalence  ")]
    assert verdicts.split()[1:] == ["PASS", "absent"]
    hash_rows = [line for line in printed.splitlines() if line.startswith("iter0_equivalence / ")]
    assert hash_rows and all(row.split()[3] == "absent" for row in hash_rows)
    steered = [line for line in printed.splitlines() if line.startswith("steered_differs / steered.ids_sha256")]
    assert steered[0].split()[3] == "yes"


# --- subprocesses: killed processes, thread counts, the real model cache, a real tracking server --------------


def _equiv(*arguments: str, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "equiv_core", *arguments],
        capture_output=True,
        text=True,
        env={**os.environ, **environment},
        timeout=900,
    )


def _start(arguments: list[str], environment: dict[str, str], stderr: Path) -> subprocess.Popen[bytes]:
    """``equiv ARGUMENTS`` in the background, its stderr going to the file ``stderr``."""
    with stderr.open("w") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "equiv_core", *arguments],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env={**os.environ, **environment},
        )


def _wait_for(path: Path, text: str, process: subprocess.Popen[bytes], timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in path.read_text():
        assert process.poll() is None, f"ended before {text!r}: {path.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"no {text!r} after {timeout_s} s"
        time.sleep(0.1)


@pytest.mark.integration
def test_sigkill_mid_run_leaves_an_orphan_that_compare_skips_and_gc_ends(tmp_path: Path) -> None:
    environment = {"EQUIV_MLFLOW_DIR": str(tmp_path / "mlflow")}
    for _ in range(2):
        assert _equiv(*TINY_RUN, "--only", "steered_differs", environment=environment).returncode == 0
    log = tmp_path / "killed.err"
    process = _start(["run", "--model", "smollm2-135m"], environment, log)
    _wait_for(log, "[2/5] kv_cache_persistence ...", process)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL

    listed = _equiv("runs", environment=environment)
    assert listed.returncode == 0 and "RUNNING (orphaned)" in listed.stdout
    compared = _equiv("compare", environment=environment)
    assert compared.returncode == 0 and "passed over newer runs that did not finish" in compared.stderr
    assert "run smollm2-135m" not in compared.stdout
    collected = _equiv("runs", "--gc", environment=environment)
    assert collected.returncode == 0 and "marked 1 orphaned run(s) FAILED" in collected.stderr
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    statuses = {run.name: run.status for run in Tracker(uri).connect().runs()}
    assert statuses["run smollm2-135m"] == "FAILED"
    assert "RUNNING" not in statuses.values()


@pytest.mark.integration
def test_two_thread_counts_then_compare_names_the_thread_difference(tmp_path: Path) -> None:
    environment = {"EQUIV_MLFLOW_DIR": str(tmp_path / "mlflow")}
    first = _equiv(*TINY_RUN, environment={**environment, "OMP_NUM_THREADS": "1"})
    assert first.returncode == 0
    assert " INFO " not in first.stderr  # MLflow's own INFO lines (first use of a store) are quieted
    assert _equiv(*TINY_RUN, environment={**environment, "OMP_NUM_THREADS": "2"}).returncode == 0
    compared = _equiv("compare", environment=environment)
    assert compared.returncode == 0
    lines = compared.stdout.splitlines()
    [differences] = [line for line in lines if line.startswith("environment differences:")]
    assert "threads 2 vs 1" in differences and "OMP_NUM_THREADS 2 vs 1" in differences
    differing = [line for line in lines if "  NO  " in line]
    assert all(line.endswith("threads 2 vs 1; OMP_NUM_THREADS 2 vs 1") for line in differing)


@pytest.fixture(scope="module")
def smollm2_cache() -> Path:
    """The real converted SmolLM2 cache (converted now if this machine has none yet)."""
    path = models.smollm2_cache_path()
    if problem_with(path, models.smollm2_gguf_path()):
        models.load_model("smollm2-135m")
    return path


@pytest.mark.integration
def test_a_bit_flipped_model_cache_is_rebuilt_with_one_line(smollm2_cache: Path, tmp_path: Path) -> None:
    copy = tmp_path / "cache" / smollm2_cache.name
    shutil.copytree(smollm2_cache, copy)
    weights = copy / "model.safetensors"
    with weights.open("r+b") as handle:
        handle.seek(weights.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0x10]))
    result = _equiv(
        "run", "--only", "steered_differs", "--no-mlflow", environment={"EQUIV_CACHE_DIR": str(tmp_path / "cache")}
    )
    assert result.returncode == 0, result.stderr[-2000:]
    notes = [line for line in result.stderr.splitlines() if "unusable" in line]
    assert len(notes) == 1
    assert "model.safetensors does not match its recorded content hash (corrupted)); rebuilding it" in notes[0]
    assert problem_with(copy, models.smollm2_gguf_path()) == ""


@pytest.mark.integration
def test_an_unwritable_cache_directory_means_one_line_and_an_in_memory_conversion(tmp_path: Path) -> None:
    result = _equiv(
        "run", "--only", "steered_differs", "--no-mlflow", environment={"EQUIV_CACHE_DIR": "/sys/equiv-bench-cache"}
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "1/1 findings hold" in result.stdout
    notes = [line for line in result.stderr.splitlines() if "cannot write the model cache" in line]
    assert len(notes) == 1 and "converting in memory" in notes[0] and "EQUIV_CACHE_DIR" in notes[0]


@pytest.mark.slow
def test_a_tracking_server_killed_mid_run_keeps_the_results_for_upload(tmp_path: Path) -> None:
    backend = f"sqlite:///{tmp_path / 'server.db'}"
    environment = {"EQUIV_MLFLOW_DIR": str(tmp_path / "local")}
    target = tmp_path / "out.json"
    log = tmp_path / "run.err"
    with mlflow_server(backend, tmp_path / "artifacts") as server:
        process = _start(
            ["run", "--model", "smollm2-135m", "--json", str(target), "--tracking-uri", server.url], environment, log
        )
        _wait_for(log, "[2/5] kv_cache_persistence ...", process)
        server.kill()
        assert process.wait(timeout=600) == 3
    stderr = log.read_text()
    line = _error_line(stderr)
    assert f"the MLflow store {server.url} failed during the run" in line
    assert json.loads(target.read_text())["model"] == "smollm2-135m"
    spooled = Path(line.split("`equiv runs --upload ")[1].rstrip("`"))

    with mlflow_server(backend, tmp_path / "artifacts") as restarted:
        listed = _equiv("runs", "--tracking-uri", restarted.url, environment=environment)
        assert "RUNNING (orphaned)" in listed.stdout
        uploaded = _equiv("runs", "--upload", str(spooled), "--tracking-uri", restarted.url, environment=environment)
        assert uploaded.returncode == 0, uploaded.stderr[-2000:]
        assert uploaded.stdout == ""  # MLflow's "View run at" lines stay off stdout
        runs = parent_and_children(restarted.url)
    statuses = sorted(parent.info.status for parent, _ in runs)
    assert statuses == ["FAILED", "FINISHED"]
    [(finished, children)] = [(parent, children) for parent, children in runs if parent.info.status == "FINISHED"]
    assert len(children) == 5 and finished.data.metrics["all_hold"] == 1.0


def test_debug_adds_the_traceback_to_an_environment_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_space(*_args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outputs.os, "replace", no_space)
    arguments = [*TINY_RUN, "--only", "steered_differs", "--no-mlflow", "--json", str(tmp_path / "out.json")]
    assert main([*arguments, "--debug"]) == 3
    stderr = capsys.readouterr().err
    assert "Traceback (most recent call last)" in stderr
    assert stderr.rstrip().splitlines()[-1].startswith("equiv: error: cannot write")
