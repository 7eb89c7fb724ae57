"""The example spec files in examples/ run as their comments say, on the default model."""

from __future__ import annotations

from pathlib import Path

import pytest

from equiv_core.cli.main import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# The exit status each example's comments promise: 0 every finding holds, 1 a finding fails (the known mistake).
EXPECTED = {
    "actadd-two-layers.toml": 0,
    "caa-generated.toml": 0,
    "ablate-direction.toml": 0,
    "known-wrong-late-window.toml": 1,
}


def test_every_example_spec_file_is_listed_here_and_in_the_examples_readme() -> None:
    files = sorted(path.name for path in EXAMPLES.glob("*.toml"))
    assert files == sorted(EXPECTED)
    readme = (EXAMPLES / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in files)


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_an_example_spec_gives_the_verdict_its_comments_promise(name: str) -> None:
    command = ["run", "--spec", str(EXAMPLES / name), "--max-new-tokens", "6", "--no-mlflow"]
    assert main(command) == EXPECTED[name]


@pytest.mark.integration
def test_the_example_prompts_file_runs_as_a_batch() -> None:
    spec = str(EXAMPLES / "actadd-two-layers.toml")
    command = ["run", "--spec", spec, "--prompts", str(EXAMPLES / "prompts.txt"), "--max-new-tokens", "4"]
    assert main([*command, "--only", "coverage,batch_invariance", "--no-mlflow"]) == 0
