"""Where a model keeps its decoder layers, and what form a layer's output takes, found at run time.

GPT-2-style models keep blocks at ``transformer.h``, Llama-style at ``model.layers``. A block returns a
tuple ``(hidden, ...)`` in older transformers and a bare tensor in newer ones (GPT-2 from 5.3.0, Llama from
4.54.0), so ``block.output[0]`` means "the hidden states" on one version and "batch row 0" on another. This
module detects the form with a plain forward hook and gives everyone one way to reach the hidden states.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

BlockOutputForm = Literal["tensor", "tuple"]

# Checked first, in order; anything else falls back to a search for the ModuleList of num_hidden_layers.
KNOWN_LAYER_PATHS = (
    "transformer.h",
    "model.layers",
    "gpt_neox.layers",
    "model.decoder.layers",
    "transformer.blocks",
)


@dataclass(frozen=True, slots=True)
class Architecture:
    """What the experiments need to know about a model's layout."""

    layers_path: str
    num_layers: int
    hidden_size: int
    block_output_form: BlockOutputForm
    max_positions: int | None
    # transformers' attention kernel in use (``config._attn_implementation``: "sdpa", "eager", ...); None: not set
    attn_implementation: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers_path": self.layers_path,
            "num_layers": self.num_layers,
            "hidden_size": self.hidden_size,
            "block_output_form": self.block_output_form,
            "max_positions": self.max_positions,
            "attn_implementation": self.attn_implementation,
        }


def find_decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The dotted path and the ModuleList of decoder blocks, without the caller naming either."""
    for path in KNOWN_LAYER_PATHS:
        try:
            candidate = operator.attrgetter(path)(model)
        except AttributeError:
            continue
        if isinstance(candidate, nn.ModuleList) and len(candidate) > 0:
            return path, candidate
    expected = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    lists = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.ModuleList)]
    matching = [(name, module) for name, module in lists if expected is None or len(module) == expected]
    if not matching:
        raise ValueError(
            f"cannot find the decoder layers of {type(model).__name__}: no ModuleList of "
            f"{expected} blocks among {[name for name, _ in lists]}"
        )
    return max(matching, key=lambda item: len(item[1]))


def hidden_states_of(block_output: Any) -> torch.Tensor:
    """The [batch, seq, hidden] tensor inside a block's output, whichever form it takes."""
    hidden = block_output[0] if isinstance(block_output, tuple) else block_output
    assert isinstance(hidden, torch.Tensor), f"block output holds {type(hidden).__name__}, not a tensor"
    return hidden


def with_hidden_states(block_output: Any, hidden: torch.Tensor) -> Any:
    """``block_output`` with its [batch, seq, hidden] tensor replaced by ``hidden``, in the same form (tuple or
    tensor): what a forward hook or a wrapper returns to edit a block's output."""
    return (hidden, *block_output[1:]) if isinstance(block_output, tuple) else hidden


def output_form_of(block_output: Any) -> BlockOutputForm:
    """``tuple`` or ``tensor``: how this transformers version returns a decoder block's output."""
    return "tuple" if isinstance(block_output, tuple) else "tensor"


def detect_block_output_form(model: nn.Module, layer: nn.Module, input_ids: torch.Tensor) -> BlockOutputForm:
    """Run one forward pass with a plain hook on ``layer`` and report the form of its output."""
    seen: list[BlockOutputForm] = []

    def record(_module: nn.Module, _args: Any, output: Any) -> None:
        seen.append(output_form_of(output))

    handle = layer.register_forward_hook(record)
    try:
        with torch.no_grad():
            model(input_ids=input_ids)
    finally:
        handle.remove()
    if not seen:
        raise ValueError(f"layer {type(layer).__name__} did not run during a forward pass")
    return seen[0]


def describe(model: nn.Module, probe_ids: torch.Tensor) -> Architecture:
    """Layer path, depth, width, block output form and attention kernel of ``model``, probed with ``probe_ids``."""
    path, layers = find_decoder_layers(model)
    config = getattr(model, "config", None)
    hidden_size = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
    max_positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    form = detect_block_output_form(model, layers[0], probe_ids)
    attention = getattr(config, "_attn_implementation", None)
    return Architecture(path, len(layers), int(hidden_size or 0), form, max_positions, attention)
