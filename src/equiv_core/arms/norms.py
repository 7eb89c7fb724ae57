"""The size of what a spec steers: the mean L2 norm of the unsteered tensor at each steered layer's site (the
residual stream after the block, by default) over the prompts' tokens, measured with plain hooks in one forward
pass. A relative scale (``--scale 4xnorm``) multiplies it, and every spec run reports it, so a strength can be read
against it (IBM activation-steering#2: "strength up to 4 has no effect" on Gemma-2, whose residual norms are in the
hundreds)."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import nn

from equiv_core.models.inputs import PromptBatch
from equiv_core.models.sites import SiteModule, site_hooks


def mean_site_norms(model: nn.Module, batch: PromptBatch, sites: tuple[SiteModule, ...]) -> tuple[float, ...]:
    """Per site, the mean L2 norm (float32, in the tensor's own units) of the edited columns of the site's tensor
    [batch, seq, width] over every row's real prompt tokens but its first (the first token is often an attention
    sink whose norm is many times the others': Sun et al. 2024, "Massive Activations in Large Language Models",
    arXiv:2402.17762); a one-token prompt keeps its token. Pad columns are never counted, and where the model's
    forward takes ``position_ids`` they count real tokens only, as ``generate`` numbers them, so a padded row
    measures what it measures alone."""
    mask = batch.attention_mask.cpu()
    kept = torch.zeros_like(mask, dtype=torch.bool)
    for row in range(batch.size):
        columns = torch.nonzero(mask[row]).flatten()
        kept[row, columns[1:] if len(columns) > 1 else columns] = True
    norms: dict[int, float] = {}

    def measure(site: SiteModule) -> Callable[[torch.Tensor], None]:
        def record(tensor: torch.Tensor) -> None:
            edited = tensor if site.columns is None else tensor[..., list(site.columns)]
            norms.setdefault(site.layer, float(edited.detach().float().norm(dim=-1).cpu()[kept].mean()))

        return record

    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    if "position_ids" in inspect.signature(model.forward).parameters:
        # As generate numbers them: a left-padded row's first real token is position 0, as when it runs alone.
        inputs["position_ids"] = (batch.attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad(), site_hooks(model, [(site, measure(site)) for site in sites]):
        model(**inputs, use_cache=False)
    return tuple(norms[site.layer] for site in sites)
