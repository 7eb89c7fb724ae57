"""``equiv compare`` on a local SQLite store: which runs it compares, which it refuses, and how it reads the hashes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from equiv_core.cli.main import main
from equiv_core.tracking.compare import Setup, setup_differences
from equiv_core.tracking.store import Tracker

SPEC_RUN = ["run", "--model", "tiny-gpt2", "--max-new-tokens", "4"]


def _error_line(captured: str) -> str:
    lines = captured.strip().splitlines()
    assert len(lines) == 1, captured
    return lines[0]


def _run_ids(store: str) -> list[str]:
    """The top-level runs of the store's default experiment, newest first."""
    return [run.run_id for run in Tracker(store).connect().runs(top_level=True)]


def _batch(tmp_path: Path) -> str:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The weather today is\nI love this film\n")
    return str(prompts)


def test_compare_prints_verdicts_and_identical_hashes(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(2):
        assert main(["run", "--model", "tiny-llama", "--only", "iter0_equivalence,steered_differs"]) == 0
    capsys.readouterr()
    assert main(["compare"]) == 0
    printed = capsys.readouterr().out
    assert "iter0_equivalence" in printed and "PASS" in printed
    hash_rows = [line for line in printed.splitlines() if "_sha256" in line]
    assert hash_rows and all(" yes " in row for row in hash_rows)


def test_compare_needs_two_runs(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare"]) == 2
    assert "need at least 2" in capsys.readouterr().err


def test_compare_refuses_a_batch_against_a_single_prompt(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*SPEC_RUN, "--recipe", "actadd-all"]) == 0
    assert main([*SPEC_RUN, "--recipe", "actadd-all", "--prompts", _batch(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["compare", *_run_ids(store)]) == 2
    error = _error_line(capsys.readouterr().err)
    assert "cannot be compared: batch_size 2 vs 1" in error and "give run ids of the same" in error


def test_compare_refuses_the_five_findings_against_a_spec(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--model", "tiny-gpt2", "--only", "steered_differs"]) == 0
    assert main([*SPEC_RUN, "--recipe", "actadd-all"]) == 0
    capsys.readouterr()
    assert main(["compare", *_run_ids(store)]) == 2
    assert "cannot be compared: mode spec vs five findings" in _error_line(capsys.readouterr().err)


def test_compare_without_ids_passes_over_a_newer_run_it_cannot_compare(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*SPEC_RUN, "--recipe", "actadd-all"]) == 0
    assert main([*SPEC_RUN, "--recipe", "actadd-all", "--prompts", _batch(tmp_path)]) == 0
    assert main([*SPEC_RUN, "--recipe", "actadd-all"]) == 0
    newest, batch, oldest = _run_ids(store)
    capsys.readouterr()
    assert main(["compare"]) == 0
    captured = capsys.readouterr()
    assert f"cannot be compared with {newest[:8]}: {batch[:8]} (batch_size 1 vs 2)" in captured.err
    compared = captured.out.splitlines()[0]  # the runs' names: the table's header
    assert newest[:8] in compared and oldest[:8] in compared and batch[:8] not in compared


def test_compare_without_ids_refuses_when_no_earlier_run_is_comparable(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*SPEC_RUN, "--recipe", "actadd-all"]) == 0
    assert main([*SPEC_RUN, "--recipe", "actadd-all", "--prompts", _batch(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["compare"]) == 2
    assert "has no earlier finished run of the same command, mode and number of prompts" in _error_line(
        capsys.readouterr().err
    )


def test_compare_compares_runs_that_failed_their_verdict(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A run ended FAILED by a failing finding reached its verdict: it is compared, not passed over."""
    for _ in range(2):
        assert main([*SPEC_RUN, "--recipe", "wrong-late-window"]) == 1
    capsys.readouterr()
    assert main(["compare"]) == 0
    assert "passed over" not in capsys.readouterr().err


def test_compare_lists_what_the_runs_ran_differently_first(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*SPEC_RUN, "--recipe", "actadd-all"]) == 0
    assert main([*SPEC_RUN, "--recipe", "wrong-late-window"]) == 1
    capsys.readouterr()
    assert main(["compare"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("these runs ran different things")
    assert lines[2].startswith("edit ") and "steps iter[1:]" in lines[2] and "steps auto" in lines[2]


def test_a_hash_that_differs_with_the_edit_names_the_edit_as_the_cause(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*SPEC_RUN, "--recipe", "actadd-all"]) == 0
    assert main([*SPEC_RUN, "--recipe", "wrong-late-window"]) == 1
    capsys.readouterr()
    assert main(["compare"]) == 0
    differing = [line for line in capsys.readouterr().out.splitlines() if "  NO  " in line]
    assert differing and all(line.endswith("ran differently: edit") for line in differing)


def test_each_arm_hash_shared_by_several_findings_is_printed_once(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for _ in range(2):
        assert main([*SPEC_RUN, "--recipe", "actadd-all"]) == 0
    capsys.readouterr()
    assert main(["compare"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.split(" ", 3)[1:2] == ["/"]]
    unsteered = [row for row in rows if row.split()[2] == "unsteered.ids_sha256"]
    assert len(unsteered) == 1
    assert unsteered[0].split("  ")[-1].strip() == "cache_vs_recompute, coverage, steered_differs"


def test_a_field_one_run_did_not_record_is_no_difference() -> None:
    older = Setup.from_params({"command": "run", "model": "tiny-gpt2"})  # logged before batch_size was a param
    newer = Setup.from_params({"command": "run", "model": "tiny-gpt2", "batch_size": "2"})
    assert setup_differences([older, newer]) == []


def test_the_attention_kernel_is_recorded_and_compare_names_it(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same weights under sdpa and eager give different logits hashes (tiny-llama here); the kernel each run
    used is in its JSON and tags, and `equiv compare` names it among the environment differences."""
    for kernel in ("sdpa", "eager"):
        run = ["run", "--model", "tiny-llama", "--only", "steered_differs", "--attn-implementation", kernel]
        assert main([*run, "--json", str(tmp_path / f"{kernel}.json")]) == 0
        payload = json.loads((tmp_path / f"{kernel}.json").read_text())
        assert payload["architecture"]["attn_implementation"] == kernel
    capsys.readouterr()
    assert main(["compare"]) == 0
    printed = capsys.readouterr().out
    assert [line for line in printed.splitlines() if "_sha256" in line and "  NO  " in line]
    differences = next(line for line in printed.splitlines() if line.startswith("environment differences:"))
    assert "attn_implementation" in differences and "eager" in differences and "sdpa" in differences


def test_the_attention_kernel_a_model_loads_with_is_recorded_without_the_option(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    assert main(["run", "--model", "tiny-gpt2", "--only", "steered_differs", "--no-mlflow", "--json", str(target)]) == 0
    assert json.loads(target.read_text())["architecture"]["attn_implementation"] == "sdpa"  # transformers 5's default
