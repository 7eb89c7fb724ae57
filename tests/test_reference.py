"""The raw-hook reference: edits exactly what it is told, when it is told, and leaves no hook behind."""

from __future__ import annotations

import pytest
import torch

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.reference import edit_hook, hook_generate
from equiv_core.arms.steering import Edit


def test_hook_is_removed_after_use(tiny_context: SteeringContext) -> None:
    model = tiny_context.loaded.model
    input_ids = tiny_context.encode("The weather today is")
    with torch.no_grad():
        before = model(input_ids).logits
        with edit_hook(model, Edit(0, -1), "prompt"):
            during = model(input_ids).logits
        after = model(input_ids).logits
    assert not torch.equal(before, during)
    assert torch.equal(before, after)


def test_prompt_mode_edits_only_the_first_call(tiny_context: SteeringContext) -> None:
    model = tiny_context.loaded.model
    input_ids = tiny_context.encode("The weather today is")
    with torch.no_grad(), edit_hook(model, Edit(0, -1), "prompt"):
        first = model(input_ids).logits
        second = model(input_ids).logits
    with torch.no_grad():
        clean = model(input_ids).logits
    assert not torch.equal(first, clean)
    assert torch.equal(second, clean)


def test_every_step_without_cache_equals_prompt_only_with_cache(tiny_context: SteeringContext) -> None:
    """Full recompute re-applying the edit at n-1 each step is the same steering as a step-0 edit + cache."""
    input_ids = tiny_context.encode("The weather today is")
    last = input_ids.shape[1] - 1
    pad = tiny_context.loaded.tokenizer.pad_token_id
    cached = hook_generate(tiny_context.loaded.model, input_ids, 6, pad, Edit(0, last), "prompt")
    recomputed = hook_generate(
        tiny_context.loaded.model, input_ids, 6, pad, Edit(0, last), "every_step", use_cache=False
    )
    unsteered = hook_generate(tiny_context.loaded.model, input_ids, 6, pad, None)
    assert cached.generated_ids == recomputed.generated_ids
    assert cached.generated_ids != unsteered.generated_ids
    assert len(cached.generated_ids) == 6
    assert cached.step_logits.shape == (6, tiny_context.loaded.model.config.vocab_size)


def test_an_unknown_when_is_refused_by_hook_and_nnsight_alike(tiny_context: SteeringContext) -> None:
    input_ids = tiny_context.encode("The weather today is")
    with pytest.raises(ValueError, match="unknown when 'step1'; valid: prompt, step0, every_step"):
        hook_generate(tiny_context.loaded.model, input_ids, 2, None, Edit(0, -1), "step1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown when 'step1'; valid: prompt, step0, every_step"):
        tiny_context.nnsight.generate(input_ids, 2, Edit(0, -1), "step1")  # type: ignore[arg-type]


def test_the_five_findings_take_only_the_original_zeroing_edit() -> None:
    from equiv_core.findings.finding import ExperimentConfig
    from equiv_core.support.errors import UserInputError

    with pytest.raises(UserInputError, match="the five findings use the original study's 'zero' edit"):
        ExperimentConfig(edit="add")
