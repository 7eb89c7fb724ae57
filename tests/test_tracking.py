"""MLflow logging of ``equiv run`` / ``equiv bench`` to a local SQLite store: content, run names and verdicts, the
experiment's kind, faults, concurrency."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mlflow.entities import ViewType
from mlflow_helpers import artifact_paths, free_port, parent_and_children

from equiv_core.arms import prepare
from equiv_core.cli.main import main
from equiv_core.findings.study.registered import EXPERIMENTS
from equiv_core.support.registry import Registry
from equiv_core.tracking.schema import EXPERIMENT_KIND_TRAINING, Tag
from equiv_core.tracking.store import DEFAULT_EXPERIMENT, Tracker, resolve_tracking_uri
from mlflow import MlflowClient

# The known-wrong recipe's coverage finding fails (it must be flagged); its other three hold.
FAILING_RUN = ["run", "--model", "tiny-gpt2", "--recipe", "wrong-late-window", "--max-new-tokens", "4"]


def test_store_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EQUIV_MLFLOW_DIR", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert resolve_tracking_uri() == "http://127.0.0.1:1"
    assert resolve_tracking_uri("sqlite:////x/y.db") == "sqlite:////x/y.db"


def test_run_logs_parent_and_a_child_per_finding(store: str, tmp_path: Path) -> None:
    assert main(["run", "--model", "tiny-gpt2", "--json", str(tmp_path / "r.json")]) == 0
    [(parent, children)] = parent_and_children(store)
    assert parent.info.status == "FINISHED" and parent.info.run_name == "run tiny-gpt2 PASS 5/5"
    assert {"model", "prompt", "layer", "position", "edit", "max_new_tokens", "dtype", "device", "seed"} <= set(
        parent.data.params
    )
    tags = parent.data.tags
    for key in (
        "nnsight_version",
        "transformers_version",
        "torch_version",
        "python",
        "block_output_form",
        "determinism.deterministic_algorithms",
        "git_commit",
        "fingerprint",
    ):
        assert key in tags, key
    assert tags["block_output_form"] == "tensor"
    assert all(tags[f"finding.{name}"] == "PASS" for name in EXPERIMENTS.names())
    assert parent.data.metrics["all_hold"] == 1.0
    assert "kv_cache_persistence.logits_vs_generation.max_abs_diff" in parent.data.metrics
    assert sorted(child.data.params["finding"] for child in children) == sorted(EXPERIMENTS.names())
    assert all(c.info.status == "FINISHED" and c.data.metrics["holds"] == 1.0 for c in children)
    assert {
        "results.json",
        "generated_ids.json",
        "logits_hashes.json",
        "environment/pip-freeze.txt",
        "environment/collect_env.txt",
    } <= artifact_paths(store, parent.info.run_id)
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["mlflow"]["run_id"] == parent.info.run_id


def test_bench_logs_cells_findings_plot_and_attachments(store: str, tmp_path: Path) -> None:
    attachment = tmp_path / "notes.txt"
    attachment.write_text("a file the user asked to keep with the run")
    code = main(
        [
            "bench",
            "--model",
            "tiny-llama",
            "--rounds",
            "2",
            "--max-rounds",
            "2",
            "--arms",
            "plain,iter0,recompute,hook,unsteered",  # floor's compiling has tests of its own
            "--new-tokens",
            "2,4",
            "--no-progress",
            "--with-findings",
            "--plot",
            str(tmp_path / "p.png"),
            "--json",
            str(tmp_path / "b.json"),
            "--pytest-benchmark-json",
            str(tmp_path / "pytest-benchmark.json"),
            "--attach",
            str(attachment),
        ]
    )
    assert code == 0
    [(parent, children)] = parent_and_children(store)
    kinds = [child.data.tags["kind"] for child in children]
    assert kinds.count("finding") == 5 and kinds.count("bench-cell") == 5 * 3  # sizes 1 (prefill), 2, 4
    cell = next(c for c in children if c.info.run_name == "arm: plain x4")
    assert {
        "median_s",
        "iqr_s",
        "min_s",
        "ratio_to_hook",
        "ratio_to_unsteered",
        "ids_match_hook",
        "steering_applied",
        "ci_half_width",
        "cpu_median_s",
        "peak_memory_bytes",
        "precise",
    } <= set(cell.data.metrics)
    assert {"precise_share", "timing_seconds", "others_cpu_share", "loadavg_start"} <= set(parent.data.metrics)
    exponents = json.loads((tmp_path / "b.json").read_text())["growth_exponents"]
    for arm, exponent in exponents.items():  # a slope is a metric only when its CI says it was measured
        assert (f"growth_exponent.{arm}" in parent.data.metrics) == exponent["measurable"]
    assert {
        "bench.json",
        "p.png",
        "attachments/pytest-benchmark.json",
        "attachments/notes.txt",
        "environment/pip-freeze.txt",
    } <= artifact_paths(store, parent.info.run_id)


def test_a_bench_run_is_named_by_model_dtype_device_and_its_verdict_over_cells_and_findings(store: str) -> None:
    arguments = ["--rounds", "1", "--max-rounds", "1", "--arms", "hook,unsteered,plain", "--new-tokens", "2"]
    assert main(["bench", "--model", "tiny-llama", *arguments, "--no-progress", "--no-plot", "--with-findings"]) == 0
    [(parent, children)] = parent_and_children(store)
    checks = len(children)  # a child run per cell (the busy-machine budget may drop some) and per finding
    assert checks >= 5 and parent.info.run_name == f"bench tiny-llama float32 cpu PASS {checks}/{checks} checks"


def test_ctrl_c_mid_run_ends_killed_and_keeps_finished_children(
    store: str, replace_entry: Callable[[Registry[Any], str, Any], None]
) -> None:
    def interrupted(*_args: object) -> None:
        raise KeyboardInterrupt

    experiment = EXPERIMENTS.get("iter0_equivalence")
    replace_entry(EXPERIMENTS, "iter0_equivalence", dataclasses.replace(experiment, run=interrupted))
    assert main(["run", "--model", "tiny-gpt2"]) == 130
    [(parent, children)] = parent_and_children(store)
    assert parent.info.status == "KILLED"
    assert sorted(c.data.params["finding"] for c in children) == ["kv_cache_persistence", "position_sweep"]
    assert all(c.info.status == "FINISHED" for c in children)


def test_error_mid_run_ends_failed(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("equiv_core.tracking.run_logging.log_run_report", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        main(["run", "--model", "tiny-gpt2", "--only", "steered_differs"])
    [(parent, children)] = parent_and_children(store)
    assert parent.info.status == "FAILED"
    assert [c.info.status for c in children] == ["FINISHED"]


def test_unreachable_store_fails_before_model_work(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def no_model_work(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the model was loaded although the store is unreachable")

    monkeypatch.setattr(prepare, "load_model", no_model_work)
    target = tmp_path / "out.json"
    code = main(
        ["run", "--model", "tiny-gpt2", "--tracking-uri", f"http://127.0.0.1:{free_port()}", "--json", str(target)]
    )
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "cannot reach the MLflow tracking store" in error[0] and "--no-mlflow" in error[0]
    assert not target.exists()


def test_no_mlflow_logs_nothing(unused_store: str) -> None:
    assert main(["run", "--model", "tiny-gpt2", "--only", "steered_differs", "--no-mlflow"]) == 0
    assert not Path(unused_store.removeprefix("sqlite:///")).exists()


@pytest.mark.integration
def test_four_processes_logging_at_once_lose_no_run(store: str, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "equiv_core", "run", "--model", "tiny-gpt2", "--only", "steered_differs"]
    environment = {**os.environ, "EQUIV_MLFLOW_DIR": str(tmp_path / "mlflow")}
    processes = [
        subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(4)
    ]
    errors = [process.communicate(timeout=300)[1].decode() for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0, 0], errors
    runs = parent_and_children(store)
    assert len(runs) == 4
    assert all(parent.info.status == "FINISHED" and len(children) == 1 for parent, children in runs)


def test_a_run_is_named_by_its_recipe_model_and_verdict(store: str) -> None:
    assert main(["run", "--model", "tiny-gpt2", "--recipe", "actadd-all", "--max-new-tokens", "4"]) == 0
    [(parent, _children)] = parent_and_children(store)
    assert parent.info.run_name == "run actadd-all tiny-gpt2 PASS 4/4"


def test_a_batch_run_of_another_spec_is_named_by_op_layers_and_number_of_prompts(store: str, tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The weather today is\nI love this film\n")
    arguments = ["--op", "zero", "--layers", "1", "--prompts", str(prompts), "--max-new-tokens", "3"]
    assert main(["run", "--model", "tiny-gpt2", *arguments]) == 0
    [(parent, _children)] = parent_and_children(store)
    assert parent.info.run_name == "run zero@L1 tiny-gpt2 2 prompts PASS 5/5"


def test_a_run_whose_finding_fails_exits_1_and_ends_failed_with_the_finding_named(store: str) -> None:
    assert main(FAILING_RUN) == 1
    [(parent, _children)] = parent_and_children(store)
    assert parent.info.status == "FAILED"
    assert parent.info.run_name == "run wrong-late-window tiny-gpt2 FAIL 3/4"
    assert parent.data.tags[Tag.END_REASON] == "verdict FAIL: coverage failed"


def test_the_verdict_is_a_tag_and_the_failed_count_a_metric(store: str) -> None:
    assert main(FAILING_RUN) == 1
    [(parent, _children)] = parent_and_children(store)
    assert parent.data.tags[Tag.VERDICT] == "FAIL"
    assert parent.data.metrics["findings_failed"] == 1.0


def test_a_failing_findings_child_run_ends_failed_and_the_others_finished(store: str) -> None:
    assert main(FAILING_RUN) == 1
    [(_parent, children)] = parent_and_children(store)
    ended = {child.info.run_name: child.info.status for child in children}
    assert ended == {
        "finding: coverage FAIL": "FAILED",
        "finding: arms_agree PASS": "FINISHED",
        "finding: cache_vs_recompute PASS": "FINISHED",
        "finding: steered_differs PASS": "FINISHED",
    }


def test_a_run_failed_by_its_verdict_is_told_from_a_crashed_one(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(FAILING_RUN) == 1

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("equiv_core.tracking.run_logging.log_run_report", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        main(FAILING_RUN)
    crashed, judged = Tracker(store).connect().runs(top_level=True)  # newest first
    assert (crashed.status, judged.status) == ("FAILED", "FAILED")
    assert (crashed.reached_verdict, judged.reached_verdict) == (False, True)


def test_a_new_experiment_is_marked_a_model_training_experiment(store: str) -> None:
    Tracker(store, "fresh").connect()
    experiment = MlflowClient(store).get_experiment_by_name("fresh")
    assert experiment is not None and experiment.tags[Tag.EXPERIMENT_KIND] == EXPERIMENT_KIND_TRAINING


def test_an_existing_experiment_without_a_kind_is_marked_when_equiv_uses_it(store: str) -> None:
    client = MlflowClient(store)
    client.create_experiment(DEFAULT_EXPERIMENT)  # as an older equiv made it
    Tracker(store).connect()
    experiment = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    assert experiment is not None and experiment.tags[Tag.EXPERIMENT_KIND] == EXPERIMENT_KIND_TRAINING


def test_an_experiment_kind_set_by_hand_is_kept(store: str) -> None:
    client = MlflowClient(store)
    client.create_experiment(DEFAULT_EXPERIMENT, tags={Tag.EXPERIMENT_KIND: "genai_development"})
    Tracker(store).connect()
    experiment = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    assert experiment is not None and experiment.tags[Tag.EXPERIMENT_KIND] == "genai_development"


def test_bad_input_known_before_loading_opens_no_store(unused_store: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A built-in model's depth is known without loading it: a bad layer fails before MLflow or the model."""
    assert main(["run", "--model", "tiny-gpt2", "--layer", "9"]) == 2
    assert "layer 9 out of range; valid: 0..1 (or -2..-1)" in capsys.readouterr().err
    assert not Path(unused_store.removeprefix("sqlite:///")).exists()


def test_bad_input_found_after_loading_leaves_no_run(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A prompt position needs the tokenizer: the run opened before loading is deleted, not left behind."""
    assert main(["run", "--model", "tiny-gpt2", "--position", "9"]) == 2
    assert "position 9 out of range" in capsys.readouterr().err
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("equiv-bench")
    assert experiment is not None
    assert client.search_runs([experiment.experiment_id]) == []
    deleted = client.search_runs([experiment.experiment_id], run_view_type=ViewType.DELETED_ONLY)
    assert [run.info.status for run in deleted] == ["FAILED"]


@pytest.mark.slow
def test_sigterm_mid_run_ends_killed(store: str, tmp_path: Path) -> None:
    """A run terminated from outside (a CI timeout, `kill`) ends KILLED, not RUNNING."""
    command = [sys.executable, "-m", "equiv_core", "run", "--model", "gpt2-small-random"]
    environment = {**os.environ, "EQUIV_MLFLOW_DIR": str(tmp_path / "mlflow")}
    process = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    running = False
    while time.monotonic() < deadline and process.poll() is None and not running:
        time.sleep(0.2)
        try:
            running = any(parent.info.status == "RUNNING" for parent, _ in parent_and_children(store))
        except Exception:  # noqa: BLE001 - the store or experiment may not exist yet
            running = False
    assert running, "the run never showed up as RUNNING"
    process.send_signal(signal.SIGTERM)
    _, errors = process.communicate(timeout=120)
    assert process.returncode == 130, errors.decode()[-2000:]
    [(parent, _children)] = parent_and_children(store)
    assert parent.info.status == "KILLED"


def test_no_mlflow_builds_no_environment_manifest(monkeypatch: pytest.MonkeyPatch) -> None:
    """pip freeze and torch's collect_env (most of a second) are built only for a run that is logged."""
    from equiv_core.tracking import run_logging

    def refuse() -> dict[str, str]:
        raise AssertionError("environment manifest built for a run nobody logs")

    monkeypatch.setattr(run_logging, "environment_manifest", refuse)
    assert main(["run", "--model", "tiny-gpt2", "--only", "steered_differs", "--no-mlflow"]) == 0


def test_a_prefetched_environment_manifest_is_built_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The run starts the manifest in the background; logging it later waits for that build, never a second."""
    import functools
    import threading
    import time

    from equiv_core.tracking import run_logging

    builds: list[int] = []
    started = threading.Event()

    def slow_build() -> dict[str, str]:
        builds.append(1)
        started.set()
        time.sleep(0.2)  # still building when the log call below comes
        return {"environment/pip-freeze.txt": "x==1\n"}

    monkeypatch.setattr(run_logging, "_build_manifest", functools.lru_cache(maxsize=1)(slow_build))
    run_logging.prefetch_environment_manifest()
    assert started.wait(timeout=10)
    assert run_logging.environment_manifest() == {"environment/pip-freeze.txt": "x==1\n"}
    assert builds == [1]


def test_an_experiment_created_by_another_process_meanwhile_is_used_not_an_error() -> None:
    """Two cells starting together on a fresh server both find no experiment and both create it: the second
    create fails with RESOURCE_ALREADY_EXISTS (seen with PostgreSQL), and that process must use the first's."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS

    from equiv_core.tracking.store import experiment_id

    class Experiment:
        experiment_id = "7"
        tags = {Tag.EXPERIMENT_KIND: EXPERIMENT_KIND_TRAINING}

    class RacingClient:
        def __init__(self) -> None:
            self.lookups = 0

        def get_experiment_by_name(self, _name: str) -> Experiment | None:
            self.lookups += 1
            return None if self.lookups == 1 else Experiment()  # the other process created it in between

        def create_experiment(self, name: str, _location: str | None, _tags: dict[str, str]) -> str:
            raise MlflowException(f"Experiment(name={name}) already exists", error_code=RESOURCE_ALREADY_EXISTS)

    assert experiment_id(RacingClient(), "equiv-audit", None) == "7"


def test_check_logs_a_check_run_with_a_child_per_finding_and_its_coverage_map(store: str) -> None:
    target = str(Path(__file__).resolve().parents[1] / "examples" / "steering" / "hook_skips_decode.py") + ":steer"
    assert main(["check", target, "--recipe", "actadd-all", "--model", "tiny-llama", "--max-new-tokens", "3"]) == 1
    [(parent, children)] = parent_and_children(store)
    assert parent.info.run_name == "check hook_skips_decode.py:steer actadd-all tiny-llama FAIL 2/4"
    assert parent.info.status == "FAILED"  # a finding failed, as for `equiv run`
    assert parent.data.tags[Tag.KIND] == "check" and parent.data.params["form"] == "hooks"
    assert sorted(child.data.params["finding"] for child in children) == sorted(
        ["coverage", "matches_reference", "steered_differs", "hooks_removed"]
    )
    assert {"coverage.png", "coverage.json"} <= artifact_paths(store, parent.info.run_id)
