"""``equiv run`` with a steering spec, and ``equiv recipes``: exit codes, JSON names other tools read, the coverage
picture, MLflow artifacts, and one-line errors for bad spec input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow_helpers import artifact_paths, parent_and_children

from equiv_core.cli.main import main
from equiv_core.findings.spec.registered import SPEC_FINDINGS
from equiv_core.spec.recipes import RECIPES

ARMS = ("plain", "iter", "recompute", "hook", "hook_recompute", "unsteered", "unsteered_recompute")
# A single prompt runs every spec finding but batch_invariance (nothing is batched).
SINGLE_PROMPT_FINDINGS = [name for name in SPEC_FINDINGS.names() if name not in ("batch_invariance", "site")]


def test_recipes_lists_the_catalogue_and_flags_the_known_wrong_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recipes"]) == 0
    printed = capsys.readouterr().out
    listed = [line.split()[0] for line in printed.splitlines() if line and not line.startswith(" ")]
    assert listed[:-1] == list(RECIPES.names())
    assert printed.count("the tool must flag it") == sum(RECIPES.get(name).known_wrong for name in RECIPES)


@pytest.mark.parametrize("recipe", list(RECIPES.names()))
@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama"])
def test_every_recipe_runs_and_known_wrong_ones_fail_coverage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str, recipe: str
) -> None:
    target = tmp_path / "out.json"
    argv = ["run", "--model", model, "--recipe", recipe, "--max-new-tokens", "8", "--json", str(target), "--no-mlflow"]
    code = main(argv)
    payload = json.loads(target.read_text())
    verdicts = {finding["id"]: finding for finding in payload["findings"]}
    site_finding = ["site"] if not RECIPES.get(recipe).spec().site.is_default else []
    assert list(verdicts) == site_finding + SINGLE_PROMPT_FINDINGS
    flags, flagged_by = RECIPES.get(recipe).flags, RECIPES.get(recipe).flagged_by
    failed = {name: finding["message"] for name, finding in verdicts.items() if finding["verdict"] != "PASS"}
    if flags:
        assert code == 1
        assert list(failed) == [flagged_by] and flags in failed[flagged_by]  # flagged, and nothing else
        assert f"[FAIL] 1. {flagged_by}" in capsys.readouterr().out
    else:
        assert (code, failed) == (0, {})
    assert payload["spec"]["op"] == RECIPES.get(recipe).spec().op


def test_spec_json_names_the_arms_their_ids_and_touches(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    argv = ["run", "--model", "tiny-gpt2", "--op", "add", "--vector", "random:3", "--scale", "8"]
    argv += ["--positions", "last+generated", "--max-new-tokens", "6", "--json", str(target), "--no-mlflow"]
    assert main(argv) == 0
    payload = json.loads(target.read_text())
    assert payload["spec"]["resolved_positions"] == [3, 4, 5, 6, 7, 8]
    assert payload["spec"]["resolved_steps"] == "iter[:N]"
    assert payload["findings"], "the run reported no finding"
    for finding in payload["findings"]:
        arms = finding["evidence"]["arms"]
        assert set(arms) == set(ARMS)
        assert arms["plain"]["expressible"] is False
        for name in ("iter", "hook"):
            assert len(arms[name]["generated_ids"]) == 6
            assert arms[name]["touched"] == [[step, 0, 3 + step, 0] for step in range(6)]
        assert len(arms["hook_recompute"]["touched"]) == sum(range(1, 7))  # position 3 + k re-edited from step k


def test_plot_draws_the_coverage_map(tmp_path: Path) -> None:
    plot = tmp_path / "coverage.png"
    assert (
        main(["run", "--model", "tiny-gpt2", "--recipe", "wrong-late-window", "--plot", str(plot), "--no-mlflow"]) == 1
    )
    assert plot.read_bytes().startswith(b"\x89PNG") and plot.stat().st_size > 10_000


def test_spec_runs_log_the_coverage_picture_and_data(store: str) -> None:
    assert main(["run", "--model", "tiny-llama", "--recipe", "caa-generated"]) == 0
    [(parent, children)] = parent_and_children(store)
    assert parent.data.params["spec.positions"] == "last+generated"
    assert sorted(child.data.params["finding"] for child in children) == sorted(SINGLE_PROMPT_FINDINGS)
    assert {"coverage.png", "coverage.json", "results.json"} <= artifact_paths(store, parent.info.run_id)


def test_a_spec_file_and_flags_override_a_recipe(tmp_path: Path) -> None:
    spec_file = tmp_path / "steer.toml"
    spec_file.write_text('recipe = "actadd-all"\nscale = 2\n')
    target = tmp_path / "out.json"
    argv = ["run", "--model", "tiny-gpt2", "--spec", str(spec_file), "--layers", "0", "--json", str(target)]
    assert main([*argv, "--no-mlflow"]) == 0
    spec = json.loads(target.read_text())["spec"]
    assert (spec["op"], spec["scale"], spec["layers"], spec["positions"]) == ("add", 2.0, "0", "all")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--recipe", "actad-all"], "unknown recipe 'actad-all' (did you mean 'actadd-all'?)"),
        (["--op", "add"], "--op add needs --vector"),
        (["--op", "zero", "--layer", "1"], "--layer and --position set the original study's edit"),
        (["--layers", "5"], "layer 5 out of range; valid: 0..1 (or -2..-1)"),
        (["--positions", "20"], "position 20 out of range; valid: -4..7"),
        (["--positions", "generated", "--steps", "prompt-pass"], "so it would never fire"),
        (["--positions", "generated", "--max-new-tokens", "1"], "--positions generated is empty with 1 new token"),
        (["--op", "add", "--vector", "random:1", "--steps", "7:9"], "starts at step 7; valid steps: 0..4"),
        (["--spec", "missing.toml"], "--spec 'missing.toml': no such file"),
        (["--spec", ""], "--spec '.': give a .toml file"),
        (["--recipe", ""], "unknown recipe ''"),
        (["--only", ","], "--only selects no finding"),
        (["--plot", "x.png"], "--plot draws a steering spec's coverage map"),
        (["--positions", "generated", "--steps", "0"], "computed at steps 1..4, which the steps never reach"),
        (["--op", "add", "--vector", "actadd:a|b|c"], "two non-empty prompts separated by one |"),
        (["--op", "add", "--vector", "actadd:" + " weather" * 300 + "|b"], "actadd prompt is 300 tokens"),
        (["--op", "add", "--vector", "actadd:same|same"], "the vector for layer 0 is zero"),
    ],
)
def test_bad_spec_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    assert main(["run", "--model", "tiny-gpt2", *arguments, "--json", str(tmp_path / "o.json"), "--no-mlflow"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert message in error[-1]
    assert "Traceback" not in "\n".join(error)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"not a tensor file", "cannot read it: "),
        (b"", "cannot read it: "),
    ],
)
@pytest.mark.parametrize("suffix", [".pt", ".npy", ".safetensors"])
def test_an_unreadable_vector_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, message: str, suffix: str
) -> None:
    vector = tmp_path / f"v{suffix}"
    vector.write_bytes(content)
    argv = ["run", "--model", "tiny-gpt2", "--op", "add", "--vector", str(vector), "--no-mlflow"]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert message in error[-1] and str(vector) in error[-1]
    assert "Traceback" not in "\n".join(error)


def test_a_zero_vector_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    torch.save(torch.zeros(64), tmp_path / "zero.pt")
    argv = ["run", "--model", "tiny-gpt2", "--op", "ablate", "--vector", str(tmp_path / "zero.pt"), "--no-mlflow"]
    assert main(argv) == 2
    assert "the vector for layer 0 is zero; it has no direction to add, set or ablate" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("steering = 5\n", "[steering] must be a table of fields"),
        ('op = "add"\nscale = true\n', "scale = True; give a string or a number"),
        ("layers = [1, 2.5]\n", "layers = [1, 2.5]; a list must hold one or more integers, like [2, 5]"),
        ("steps = [0, 1]\n", "steps = [0, 1]; give a string or a number"),
        ('recipe = "actadd-all"\n[extra]\nx = 1\n', "unknown field 'extra'"),
    ],
)
def test_a_spec_file_of_the_wrong_shape_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    spec_file = tmp_path / "steer.toml"
    spec_file.write_text(content)
    assert main(["run", "--model", "tiny-gpt2", "--spec", str(spec_file), "--no-mlflow"]) == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_vector_path_in_a_spec_file_is_relative_to_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from equiv_core.arms.vectors import random_unit_vector

    (tmp_path / "specs").mkdir()
    torch.save(random_unit_vector(4, 64), tmp_path / "specs" / "v.pt")
    (tmp_path / "specs" / "steer.toml").write_text('op = "add"\nvector = "v.pt"\nscale = 6\npositions = "all"\n')
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--model", "tiny-gpt2", "--spec", "specs/steer.toml", "--no-mlflow"]) == 0


def test_overriding_a_recipe_op_drops_what_the_new_op_does_not_take(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    argv = ["run", "--model", "tiny-gpt2", "--recipe", "actadd-all", "--op", "scale", "--scale", "-3"]
    assert main([*argv, "--json", str(target), "--no-mlflow"]) == 0
    spec = json.loads(target.read_text())["spec"]
    assert (spec["op"], spec["vector"], spec["scale"], spec["positions"]) == ("scale", None, -3.0, "all")


def test_two_recipes_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec_file = tmp_path / "steer.toml"
    spec_file.write_text('recipe = "caa-generated"\n')
    argv = ["run", "--model", "tiny-gpt2", "--recipe", "actadd-all", "--spec", str(spec_file), "--no-mlflow"]
    assert main(argv) == 2
    assert "two recipes: --recipe actadd-all and recipe = 'caa-generated'" in capsys.readouterr().err
