"""A cached prefix (issue 21, item 6): the prefix prefilled once, its KV cache handed to generate, positions counted
from the prefix's first token, every arm and the raw hook agreeing; and the offset a naive hook gets wrong."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
import torch
from hf_tiny_models import mamba, save_model_dir
from spec_helpers import resolved_spec, spec_run, spec_verdicts

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.prefix import cache_keyword
from equiv_core.arms.reference import spec_hook_generate, spec_hooks
from equiv_core.arms.steering import PassShape, Touch
from equiv_core.cli.main import main
from equiv_core.support.errors import ExitStatus

PREFIX = "Note:"
PROMPT = "The weather today is"


@pytest.mark.parametrize(
    "options",
    [
        {"positions": "all"},
        {"positions": "-1"},
        {"positions": "generated"},
        {"positions": "last+generated", "site": "mlp-output"},
    ],
    ids=["all", "last-prompt-token", "generated", "mlp-output"],
)
@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama"])
def test_every_finding_holds_when_generation_continues_from_a_cached_prefix(
    context_for: Callable[[str], SteeringContext], model: str, options: dict[str, str]
) -> None:
    run = spec_run(context_for(model), prefix=PREFIX, op="add", vector="random:4", scale="6", layers="0:2", **options)
    verdicts = spec_verdicts(run)
    assert {name: verdict for name, (verdict, _message) in verdicts.items()} == dict.fromkeys(verdicts, "PASS"), (
        verdicts
    )


def test_the_prompt_pass_computes_only_the_prompt_after_the_prefix(
    context_for: Callable[[str], SteeringContext],
) -> None:
    context = context_for("tiny-llama")
    resolved = resolved_spec(context, prefix=PREFIX, op="zero", positions="-1", layers="1")
    prefix = resolved.batch.prefix_length
    assert prefix > 0 and resolved.positions == ((resolved.batch.lengths[0] - 1,),)
    generation = spec_hook_generate(context.loaded.model, 0, resolved, cached=True)
    assert generation.passes[0] == PassShape(0, 1, resolved.batch.lengths[0] - prefix)
    assert generation.touched == frozenset({Touch(0, 1, resolved.batch.lengths[0] - 1)})


def test_a_hook_that_numbers_columns_from_zero_edits_the_wrong_token(
    context_for: Callable[[str], SteeringContext],
) -> None:
    """The pitfall (transformers#36151): the prompt pass after a cached prefix starts at column ``prefix``, so a
    hook that takes its first call's column i for position i edits position prefix + i. The reference does not."""
    context = context_for("tiny-llama")
    model = context.loaded.model
    prompts = ("The weather today is sunny and warm, and the wind is calm by the sea",)
    prefix = resolved_spec(context, prompts, prefix=PREFIX, op="zero").batch.prefix_length
    resolved = resolved_spec(context, prompts, prefix=PREFIX, op="zero", layers="0", positions=str(prefix + 1))
    target = resolved.positions[0][0]
    assert target == prefix + 1 and target + prefix < resolved.batch.lengths[0]  # the naive index is in range
    block = model.model.layers[0]

    def zeroed_positions(steering: Any) -> list[int]:
        """Absolute positions whose block-0 output is zero on the prompt pass, continuing from the prefix cache."""
        seen: list[torch.Tensor] = []
        with torch.no_grad(), steering:
            handle = block.register_forward_hook(lambda _m, _a, output: seen.append(output.clone()))
            try:
                cache = copy.deepcopy(resolved.prefix_cache)
                model(input_ids=resolved.batch.input_ids[:, prefix:], use_cache=True, **{cache_keyword(): cache})
            finally:
                handle.remove()
        rows = seen[0][0]
        return [prefix + index for index in range(rows.shape[0]) if not rows[index].any()]

    def naive(_module: torch.nn.Module, _args: Any, output: torch.Tensor) -> torch.Tensor:
        edited = output.clone()
        edited[0, target] = 0.0  # the absolute position used as this call's column
        return edited

    handle = block.register_forward_hook(naive)
    try:
        assert zeroed_positions(nullcontext()) == [prefix + target]  # off by the prefix length, no error
    finally:
        handle.remove()
    touched: list[Touch] = []
    passes: list[PassShape] = []
    assert zeroed_positions(spec_hooks(model, resolved, True, touched, passes)) == [target]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--positions", "0"], "position 0 is in the cached prefix"),
        (["--prompts", "examples/prompts.txt"], "--prefix with --prompts"),
        (["--chat-template"], "--prefix with --chat-template"),
    ],
)
def test_a_prefix_that_cannot_hold_is_one_line_and_exit_2(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "--model", "tiny-llama", "--prefix", PREFIX, "--op", "zero", *arguments, "--no-mlflow"]
    assert main(argv) == ExitStatus.BAD_INPUT
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_an_empty_prefix_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--model", "tiny-llama", "--prefix", " ", "--no-mlflow"]) == ExitStatus.BAD_INPUT
    assert "--prefix is empty" in capsys.readouterr().err.strip().splitlines()[-1]


def test_the_run_json_records_the_prefix_and_its_length(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    argv = ["run", "--model", "tiny-gpt2", "--prefix", PREFIX, "--op", "add", "--vector", "random:1", "--scale", "4"]
    assert main([*argv, "--positions", "all", "--max-new-tokens", "4", "--json", str(target), "--no-mlflow"]) == 0
    payload = json.loads(target.read_text())
    assert payload["config"]["prefix"] == PREFIX
    assert payload["spec"]["prefix_length"] > 0
    assert payload["spec"]["resolved_positions"][0] == payload["spec"]["prefix_length"]  # "all" starts after it


def test_a_prefix_on_a_model_whose_cache_keeps_no_columns_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Mamba's cache is a recurrent state: there is nothing to continue from by position, so no silent offset."""
    directory = save_model_dir(mamba(), tmp_path / "mamba")
    argv = ["run", "--model", str(directory), "--prefix", PREFIX, "--op", "zero", "--no-mlflow"]
    assert main(argv) == ExitStatus.BAD_INPUT
    assert "gives no KV cache holding the prefix's" in capsys.readouterr().err.strip().splitlines()[-1]
