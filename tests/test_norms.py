"""The residual norm at the steered layers (issue 21, item 2), checked against Hugging Face's own
``output_hidden_states``, and a relative scale measured against it."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import pytest
import torch
from spec_helpers import resolved_spec

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.norms import mean_site_norms
from equiv_core.arms.reference import spec_hooks
from equiv_core.arms.resolved import ResolvedSpec
from equiv_core.arms.steering import PassShape, Touch
from equiv_core.arms.vectors import random_unit_vector
from equiv_core.models.architecture import find_decoder_layers
from equiv_core.models.inputs import encode_prompts
from equiv_core.models.sites import resolve_sites
from equiv_core.spec.steering_spec import Site

PROMPTS = ("The weather today is", "A cat")


@pytest.mark.parametrize("padding", ["left", "right"])
def test_the_mean_residual_norm_is_that_of_the_hidden_states_huggingface_returns(
    context_for: Callable[[str], SteeringContext], padding: str
) -> None:
    context = context_for("tiny-llama")
    batch = encode_prompts(context.loaded.tokenizer, PROMPTS, padding=padding, device=context.device)
    sites = resolve_sites(context.loaded.model, "model.layers", (0,), Site(), None, batch.input_ids[:1])
    [measured] = mean_site_norms(context.loaded.model, batch, sites)
    norms = []
    for prompt in PROMPTS:  # each prompt alone, unpadded: hidden_states[1] is block 0's output
        ids = context.encode(prompt)
        with torch.no_grad():
            hidden = context.loaded.model(input_ids=ids, output_hidden_states=True).hidden_states[1][0]
        norms += hidden[1:].norm(dim=-1).tolist()  # every token but the first
    assert measured == pytest.approx(sum(norms) / len(norms), rel=1e-5)


def _block_output_change(context: SteeringContext, resolved: ResolvedSpec, layer: int) -> tuple[Any, Any]:
    """Block ``layer``'s output [seq, hidden] on the prompt, unsteered and under the reference hook's edit."""
    model = context.loaded.model
    block = find_decoder_layers(model)[1][layer]
    seen: list[torch.Tensor] = []
    touched: list[Touch] = []
    passes: list[PassShape] = []
    with torch.no_grad():
        for steered in (False, True):
            with spec_hooks(model, resolved, True, touched, passes) if steered else nullcontext():
                handle = block.register_forward_hook(lambda _m, _a, output: seen.append(output[0].clone()))
                try:
                    model(input_ids=resolved.batch.input_ids)
                finally:
                    handle.remove()
    return seen[0], seen[1]


def test_add_in_multiples_of_the_norm_adds_a_vector_of_that_norm(
    context_for: Callable[[str], SteeringContext],
) -> None:
    context = context_for("tiny-llama")
    resolved = resolved_spec(context, op="add", vector="random:3", scale="4xnorm", layers="1", positions="all")
    before, after = _block_output_change(context, resolved, 1)
    [norm] = resolved.site_norms
    added = (after - before).norm(dim=-1)  # per position: what the edit added
    assert torch.allclose(added, torch.full_like(added, 4 * norm), rtol=1e-4)


def test_clamp_in_multiples_of_the_norm_sets_the_component_to_that_value(
    context_for: Callable[[str], SteeringContext],
) -> None:
    context = context_for("tiny-llama")
    resolved = resolved_spec(context, op="clamp", vector="random:3", scale="-2xnorm", layers="1", positions="all")
    _before, after = _block_output_change(context, resolved, 1)
    [norm] = resolved.site_norms
    direction = random_unit_vector(3, after.shape[-1])
    component = after @ direction  # per position: the component along the unit direction
    assert torch.allclose(component, torch.full_like(component, -2 * norm), rtol=1e-4)


def test_every_spec_reports_the_residual_norm(context_for: Callable[[str], SteeringContext]) -> None:
    resolved = resolved_spec(context_for("tiny-gpt2"), op="zero", layers="0:2")
    assert len(resolved.site_norms) == 2 and all(norm > 0 for norm in resolved.site_norms)
    assert resolved.to_dict()["site_norms"] == list(resolved.site_norms)
