"""A cached prefix (``--prefix``): its tokens prefilled once, unsteered, and the KV cache handed to every cached
generation, as a server reusing a system prompt's cache does. ``generate`` then computes only the prompt after it
on the prompt pass (step 0), at positions numbered from the prefix's first token: a hook that numbers the columns of
its first call from 0 edits the wrong tokens without an error (transformers#36151, PR #47597)."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from torch import nn

from equiv_core.models.inputs import PromptBatch
from equiv_core.support.errors import UserInputError


def prefill(model: nn.Module, batch: PromptBatch) -> Any | None:
    """The KV cache (transformers ``Cache``) after one unsteered forward pass of ``batch``'s prefix ([1,
    prefix_length]); None without a prefix.

    Raises UserInputError (one line) where the model gives no cache that holds the prefix's columns (a recurrent
    state, as Mamba keeps, has none to continue from by position).
    """
    if not batch.prefix_length:
        return None
    with torch.no_grad():
        output = model(input_ids=batch.input_ids[:, : batch.prefix_length], use_cache=True)
    cache = output["cache"] if cache_keyword() == "cache" else output["past_key_values"]
    length = getattr(cache, "get_seq_length", None)
    try:
        held = int(length()) if callable(length) else None
    except (AttributeError, TypeError, ValueError):  # layers that keep no columns (transformers 5.x Mamba's)
        held = None
    if held != batch.prefix_length:
        raise UserInputError(
            f"--prefix: {type(model).__name__} gives no KV cache holding the prefix's {batch.prefix_length} positions "
            f"({type(cache).__name__}), so generation cannot continue from it by position"
        )
    return cache


def cache_keyword() -> str:
    """The name transformers gives a ready KV cache, in a model's output and as ``generate``'s keyword: ``cache``
    where its outputs have that field (transformers 5.x, which deprecates ``past_key_values`` with a warning on
    every use), else ``past_key_values``."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return (
        "cache"
        if "cache" in {field.name for field in dataclasses.fields(CausalLMOutputWithPast)}
        else "past_key_values"
    )


def prefix_kwargs(cache: Any | None, cached: bool) -> dict[str, Any]:
    """``generate`` keyword arguments for a generation that continues from ``cache`` (a copy: ``generate`` appends
    to it); none without a prefix or without the KV cache (full recompute computes the prefix at every step)."""
    if cache is None or not cached:
        return {}
    return {cache_keyword(): copy.deepcopy(cache)}
