"""Resolving a steering spec for one model and prompt batch: layers made absolute, positions checked against each
row, vectors loaded, drawn or computed (ActAdd runs the model). The result, :class:`ResolvedSpec`, is data every arm
takes (:mod:`equiv_core.arms.resolved`)."""

from __future__ import annotations

from functools import partial

import torch

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.norms import mean_site_norms
from equiv_core.arms.prefix import prefill
from equiv_core.arms.resolved import ResolvedSpec, prompt_only
from equiv_core.arms.vectors import resolve_vectors
from equiv_core.config.decoding import GREEDY, Decoding
from equiv_core.models.inputs import PromptBatch
from equiv_core.models.sites import resolve_sites
from equiv_core.spec.steering_spec import SteeringSpec
from equiv_core.support.errors import UserInputError


def resolve_spec(
    spec: SteeringSpec, context: SteeringContext, batch: PromptBatch, new_tokens: int, decoding: Decoding = GREEDY
) -> ResolvedSpec:
    """Resolve ``spec`` for this model and batch (UserInputError for a layer, position or vector that does not fit),
    with each steered layer's site found and probed (:func:`~equiv_core.models.sites.resolve_sites`) and the norm
    at each site measured on the batch (one forward pass)."""
    layers = tuple(sorted(spec.layers.resolve(context.architecture.num_layers)))
    positions = []
    for row, length in enumerate(batch.lengths):
        try:
            positions.append(spec.check_fits(length, new_tokens, batch.prefix_length))
        except UserInputError as error:
            if batch.size == 1:
                raise
            raise UserInputError(f"prompt {row + 1} ({length} tokens): {error}") from None
    model = context.loaded.model
    probe = torch.tensor([batch.row_ids(0)], device=batch.input_ids.device)  # row 0's real tokens
    sites = context.work.timed(
        partial(resolve_sites, model, context.architecture.layers_path, layers, spec.site, spec.heads, probe)
    )
    vectors = None if spec.vector is None else resolve_vectors(spec.vector, context, sites)
    steps = spec.steps.concrete(prompt_only(tuple(positions), batch.lengths))
    norms = context.work.timed(partial(mean_site_norms, model, batch, sites))
    return ResolvedSpec(
        spec,
        layers,
        tuple(positions),
        steps,
        vectors,
        batch,
        new_tokens,
        decoding,
        context.eos_token_ids(),
        norms,
        sites,
        prefill(model, batch),
    )
