"""The residual norm at the steered layers (issue 21, item 2), checked against Hugging Face's own
``output_hidden_states``, and a relative scale measured against it."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from spec_helpers import resolved_spec

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.norms import mean_site_norms
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


def test_add_in_multiples_of_the_norm_adds_a_vector_of_that_norm(
    context_for: Callable[[str], SteeringContext],
) -> None:
    resolved = resolved_spec(context_for("tiny-gpt2"), op="add", vector="random:3", scale="4xnorm", layers="0:2")
    steering = resolved.steering_norms()
    assert steering is not None and len(steering) == 2
    for added, norm in zip(steering, resolved.site_norms, strict=True):
        assert added == pytest.approx(4 * norm, rel=1e-6)


def test_clamp_in_multiples_of_the_norm_sets_the_component_to_that_value(
    context_for: Callable[[str], SteeringContext],
) -> None:
    resolved = resolved_spec(context_for("tiny-gpt2"), op="clamp", vector="random:3", scale="-2xnorm", layers="1")
    [norm] = resolved.site_norms
    assert resolved.scale_for(1) == pytest.approx(-2 * norm)


def test_every_spec_reports_the_residual_norm(context_for: Callable[[str], SteeringContext]) -> None:
    resolved = resolved_spec(context_for("tiny-gpt2"), op="zero", layers="0:2")
    assert len(resolved.site_norms) == 2 and all(norm > 0 for norm in resolved.site_norms)
    assert resolved.to_dict()["site_norms"] == list(resolved.site_norms)
