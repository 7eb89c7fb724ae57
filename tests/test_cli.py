"""The ``equiv`` command line: report, JSON schema, exit codes, and one-line errors for bad input."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from equiv_core.arms.context import SteeringContext
from equiv_core.cli.main import main
from equiv_core.findings.finding import ExperimentConfig, FindingResult, NoEvidence, verdict
from equiv_core.findings.study.registered import EXPERIMENTS
from equiv_core.support.registry import Registry


def test_run_prints_a_report_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "out.json"
    assert main(["run", "--model", "tiny-gpt2", "--json", str(target)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("[PASS]") == 5
    assert "5/5 findings hold" in printed
    payload = json.loads(target.read_text())
    assert {"model", "prompt", "prompt_tokens", "environment", "findings"} <= set(payload)
    assert payload["prompt_tokens"] == ["The", "Ġweather", "Ġtoday", "Ġis"]
    findings = {finding["id"]: finding for finding in payload["findings"]}
    assert list(findings) == [
        "position_sweep",
        "kv_cache_persistence",
        "iter0_equivalence",
        "iter_all_out_of_bounds",
        "steered_differs",
    ]
    assert all(finding["holds"] is True and "evidence" in finding for finding in findings.values())
    iter0 = findings["iter0_equivalence"]["evidence"]
    assert iter0["plain_ids"] == iter0["iter0_ids"] and len(iter0["plain_ids"]) == 5
    sweep = findings["position_sweep"]["evidence"]["generated_ids_by_position"]
    assert sorted(sweep) == ["0", "1", "2", "3"] and all(len(ids) == 5 for ids in sweep.values())
    assert payload["environment"]["nnsight_version"]


def test_layer_override_applies_to_findings_2_to_5(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    assert main(["run", "--model", "tiny-llama", "--layer", "1", "--json", str(target)]) == 0
    layers = {f["id"]: f["config"]["layer"] for f in json.loads(target.read_text())["findings"]}
    assert layers == {
        "position_sweep": 1,
        "kv_cache_persistence": 1,
        "iter0_equivalence": 1,
        "iter_all_out_of_bounds": 1,
        "steered_differs": 1,
    }


def test_failed_finding_exits_1(
    capsys: pytest.CaptureFixture[str], replace_entry: Callable[[Registry[Any], str, Any], None]
) -> None:
    experiment = EXPERIMENTS.get("steered_differs")

    def fails(context: SteeringContext, config: ExperimentConfig) -> FindingResult:
        return verdict(experiment.id, config, ["the arm broke"], "", NoEvidence())

    replace_entry(EXPERIMENTS, "steered_differs", dataclasses.replace(experiment, run=fails))
    assert main(["run", "--model", "tiny-gpt2", "--only", "steered_differs", "--no-mlflow"]) == 1
    assert "[FAIL] 1. steered_differs" in capsys.readouterr().out


def test_one_new_token_makes_the_cache_findings_not_applicable_not_failed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With one new token the KV cache is never read: findings 2 and 4 cannot be tested, and say so."""
    code = main(["run", "--model", "tiny-gpt2", "--max-new-tokens", "1", "--no-mlflow"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "[NOT APPLICABLE] 2. kv_cache_persistence" in printed
    assert "[NOT APPLICABLE] 4. iter_all_out_of_bounds" in printed
    assert "3/3 findings hold (2 not applicable to this input)" in printed


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--model", "no-such-model"], "unknown model 'no-such-model'; valid: smollm2-135m"),
        (["--model", "tiny-gpt2", "--layer", "2"], "layer 2 out of range; valid: 0..1"),
        (["--model", "tiny-gpt2", "--layer", "-3"], "layer -3 out of range; valid: 0..1"),
        (["--model", "tiny-gpt2", "--position", "4"], "position 4 out of range; valid: 0..3"),
        (["--model", "tiny-gpt2", "--prompt", ""], "prompt is empty"),
        (["--model", "tiny-gpt2", "--prompt", "   "], "prompt is empty"),
        (["--model", "tiny-gpt2", "--prompt", "The"], "need at least 2 tokens"),
        (["--model", "tiny-gpt2", "--max-new-tokens", "0"], "max-new-tokens must be >= 1"),
        (["--model", "tiny-gpt2", "--max-new-tokens", "300"], "valid 1..254 on tiny-gpt2"),  # before loading
        (["--model", "tiny-gpt2", "--max-new-tokens", "254"], "valid 1..252 for a 4-token prompt"),  # after
        (["--model", "tiny-gpt2", "--max-new-tokens", "two"], "invalid int value"),
        (["--model", "tiny-gpt2", "--device", "tpu"], "unknown device 'tpu'; valid: auto, cpu, cuda"),
        (["--model", "tiny-gpt2", "--only", "position_swep"], "did you mean 'position_sweep'"),
        (["--model", "tiny-gpt2", "--seed", "-1"], "seed -1 out of range; valid: 0..4294967295"),
        (["--model", "tiny-gpt2", "--seed", "4294967296"], "seed 4294967296 out of range; valid: 0..4294967295"),
        (["--model", "tiny-gpt2", "--experiment", ""], "--experiment must be a non-empty MLflow experiment name"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    arguments: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "out.json"
    assert main(["run", *arguments, "--json", str(target)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in error if "error" in line]) == 1
    assert message in error[-1]
    assert "Traceback" not in "\n".join(error)
    assert list(tmp_path.iterdir()) == []


def test_cuda_without_cuda_is_bad_input(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["run", "--model", "tiny-gpt2", "--device", "cuda"]) == 2
    assert "CUDA is not available here; valid: auto, cpu" in capsys.readouterr().err


def test_json_into_missing_directory_is_refused_before_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--model", "tiny-gpt2", "--json", str(tmp_path / "no" / "out.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_models_lists_the_builtins(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()[:4]]
    assert listed == ["smollm2-135m", "gpt2-small-random", "tiny-gpt2", "tiny-llama"]


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "equiv" in capsys.readouterr().out


@pytest.mark.integration
def test_module_entry_point_and_console_script_agree() -> None:
    bad = [sys.executable, "-m", "equiv_core", "run", "--model", "tiny-gpt2", "--max-new-tokens", "0"]
    result = subprocess.run(bad, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == "equiv: error: max-new-tokens must be >= 1, got 0"


@pytest.mark.integration
def test_help_models_and_recipes_import_neither_torch_nor_nnsight_nor_mlflow() -> None:
    code = (
        "import sys, io, contextlib\n"
        "from equiv_core.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    codes = [main(['--help']), main(['models']), main(['recipes']), main(['run', '--help'])]\n"
        "print(codes, sorted(m for m in ('torch', 'nnsight', 'mlflow', 'transformers') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[0, 0, 0, 0] []"


@pytest.mark.integration
@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        (["run", "--seed", "-1"], "seed -1 out of range; valid: 0..4294967295"),
        (["run", "--only", "position_sweep,position_sweep"], "--only lists position_sweep more than once"),
        (["run", "--device", "tpu"], "unknown device 'tpu'; valid: auto, cpu, cuda, cuda:N"),
        (["bench", "--target-ci", "0"], "--target-ci must be between 0 and 100 percent (exclusive), got 0"),
        (["bench", "--arms", "hook,plian"], "unknown arm 'plian' (did you mean 'plain'?)"),
        (["run", "--model", "nosuch"], "unknown model 'nosuch'; valid: smollm2-135m"),
        (["bench", "--model", "nosuch"], "unknown model 'nosuch'; valid: smollm2-135m"),
        (["run", "--max-new-tokens", "100000000"], "max-new-tokens 100000000 too large: valid 1..8190 on smollm2-135m"),
        (
            ["bench", "--model", "smollm2-135m", "--new-tokens", "8,9000"],
            "--new-tokens 9000 too large: valid 1..8190 on smollm2-135m",
        ),
        (
            ["run", "--op", "add", "--vector", "WRONG_WIDTH_NPY", "--layers", "1,2"],
            "--vector 'WRONG_WIDTH_NPY' has shape [100]; expected [576] or [2, 576] for 2 steered layers",
        ),
        (
            ["run", "--op", "add", "--vector", "WRONG_WIDTH_SAFETENSORS", "--layers", "1"],
            "--vector 'WRONG_WIDTH_SAFETENSORS' has shape [3, 576]; expected [576] or [1, 576] for 1 steered layer",
        ),
    ],
)
def test_bad_arguments_of_run_and_bench_are_answered_before_torch_loads(
    arguments: list[str], error: str, tmp_path: Path
) -> None:
    """Argument checks need no model and no torch (issue "Performance": time to a verdict); a vector file's width
    is read from its header (issue 18)."""
    files = _wrong_width_vector_files(tmp_path)
    arguments = [files.get(argument, argument) for argument in arguments]
    error = error.replace("WRONG_WIDTH_NPY", files["WRONG_WIDTH_NPY"])
    error = error.replace("WRONG_WIDTH_SAFETENSORS", files["WRONG_WIDTH_SAFETENSORS"])
    code = (
        "import sys, io, contextlib\n"
        "from equiv_core.cli.main import main\n"
        "err = io.StringIO()\n"
        "with contextlib.redirect_stderr(err):\n"
        f"    code = main({arguments!r})\n"
        "print(code, sorted(m for m in ('torch', 'nnsight', 'mlflow', 'transformers') if m in sys.modules))\n"
        "print(err.getvalue().strip())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    status, message = result.stdout.strip().splitlines()
    assert status == "2 []"
    assert message.startswith(f"equiv: error: {error}")


def _wrong_width_vector_files(folder: Path) -> dict[str, str]:
    """A [100] .npy vector and a [3, 576] .safetensors one: wrong for smollm2-135m (hidden 576, 1 or 2 layers)."""
    import numpy as np
    from safetensors.numpy import save_file

    np.save(folder / "v.npy", np.ones(100, dtype=np.float32))
    save_file({"vector": np.ones((3, 576), dtype=np.float32)}, str(folder / "v.safetensors"))
    return {"WRONG_WIDTH_NPY": str(folder / "v.npy"), "WRONG_WIDTH_SAFETENSORS": str(folder / "v.safetensors")}


def test_a_misspelled_option_is_answered_with_the_closest_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--modle", "tiny-gpt2"]) == 2
    assert capsys.readouterr().err.strip() == (
        "equiv: error: unrecognized arguments: --modle tiny-gpt2; did you mean --model? (see `equiv run --help`)"
    )


def test_a_subcommand_usage_error_is_one_equiv_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--layer", "x"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "equiv: error: argument --layer: invalid int value: 'x'; a steering spec's layers are given with --layers "
        "(see `equiv run --help`)"
    ]


def test_run_and_bench_accept_the_same_negative_layer(tmp_path: Path) -> None:
    """One validator: -1 is the last layer in both commands."""
    assert main(["run", "--model", "tiny-gpt2", "--layer", "-1", "--only", "steered_differs", "--no-mlflow"]) == 0
    bench = ["bench", "--model", "tiny-gpt2", "--layer", "-1", "--rounds", "1", "--max-rounds", "1", "--warmup", "0"]
    options = ["--new-tokens", "2", "--arms", "plain,hook,unsteered", "--no-plot", "--no-progress", "--no-mlflow"]
    assert main([*bench, *options]) == 0


def test_a_prompt_longer_than_the_context_names_the_limit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--model", "tiny-gpt2", "--prompt", " weather" * 300, "--no-mlflow"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.endswith(
        "prompt is 300 tokens, too long for this model's context of 256 positions; valid: at most 255 tokens, "
        "leaving room for 1 new token"
    )


def test_only_refuses_a_finding_listed_twice(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--model", "tiny-gpt2", "--only", "steered_differs,steered_differs", "--no-mlflow"]) == 2
    assert "--only lists steered_differs more than once" in capsys.readouterr().err


@pytest.mark.integration
def test_a_run_logged_to_a_file_has_only_equivs_own_lines_on_stderr() -> None:
    """No third-party progress bar (transformers' "Loading weights", the GGUF conversion) in a non-TTY stderr."""
    command = [sys.executable, "-m", "equiv_core", "run", "--model", "smollm2-135m", "--only", "steered_differs"]
    result = subprocess.run([*command, "--no-mlflow"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "\r" not in result.stderr
    assert [line for line in result.stderr.splitlines() if not line.startswith("equiv: ")] == []


def test_a_misspelled_subcommand_is_answered_with_the_closest_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rn"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("equiv: error: argument command: invalid choice: 'rn'")
    assert line.endswith("; did you mean 'run'? (see `equiv --help`)")
