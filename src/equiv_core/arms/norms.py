"""The size of the residual stream where a spec steers: the mean L2 norm of the unsteered output of each steered
decoder block over the prompts' tokens, measured with plain forward hooks in one forward pass. A relative scale
(``--scale 4xnorm``) multiplies it, and every spec run reports it, so a strength can be read against it (IBM
activation-steering#2: "strength up to 4 has no effect" on Gemma-2, whose residual norms are in the hundreds)."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from equiv_core.models.architecture import find_decoder_layers, hidden_states_of
from equiv_core.models.inputs import PromptBatch


def mean_residual_norms(model: nn.Module, batch: PromptBatch, layers: tuple[int, ...]) -> tuple[float, ...]:
    """Per layer of ``layers``, the mean L2 norm (float32, in the hidden states' own units) of block ``layer``'s
    output [batch, seq, hidden] over every row's real prompt tokens but its first (the first token is often an
    attention sink whose norm is many times the others': Sun et al. 2024, "Massive Activations in Large Language
    Models", arXiv:2402.17762); a one-token prompt keeps its token. Pad columns are never counted, and where the
    model's forward takes ``position_ids`` they count real tokens only, as ``generate`` numbers them, so a padded row
    measures what it measures alone."""
    _, blocks = find_decoder_layers(model)
    mask = batch.attention_mask.cpu()
    kept = torch.zeros_like(mask, dtype=torch.bool)
    for row in range(batch.size):
        columns = torch.nonzero(mask[row]).flatten()
        kept[row, columns[1:] if len(columns) > 1 else columns] = True
    norms: dict[int, float] = {}
    handles = []
    for layer in layers:

        def measure(_module: nn.Module, _args: Any, output: Any, layer: int = layer) -> None:
            per_token = hidden_states_of(output).detach().float().norm(dim=-1).cpu()  # [batch, seq]
            norms[layer] = float(per_token[kept].mean())

        handles.append(blocks[layer].register_forward_hook(measure))
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    if "position_ids" in inspect.signature(model.forward).parameters:
        # As generate numbers them: a left-padded row's first real token is position 0, as when it runs alone.
        inputs["position_ids"] = (batch.attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    try:
        with torch.no_grad():
            model(**inputs, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return tuple(norms[layer] for layer in layers)
