"""Where a model keeps its decoder layers, and what form a layer's output takes, found at run time.

GPT-2-style models keep blocks at ``transformer.h``, Llama-style at ``model.layers``, a multimodal causal LM
(Gemma 3's ``Gemma3ForConditionalGeneration``) at ``model.language_model.layers`` beside a vision tower's layers.
A block returns a tuple ``(hidden, ...)`` in older transformers and a bare tensor in newer ones (GPT-2 from 5.3.0,
Llama from 4.54.0), so ``block.output[0]`` means "the hidden states" on one version and "batch row 0" on another.
This module detects the form with a plain forward hook and gives everyone one way to reach the hidden states, and
refuses a model whose blocks output anything but one ``[batch, seq, hidden]`` residual stream.
"""

from __future__ import annotations

import inspect
import operator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from equiv_core.support.errors import UserInputError

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


class UnsupportedArchitecture(UserInputError):
    """The model's decoder blocks do not output one ``[batch, seq, hidden]`` residual stream, so no edit of this
    package would mean what it says (exit 2, one line naming the shape found)."""


def text_config(model: nn.Module) -> Any:
    """The config that holds the language model's sizes: ``config.get_text_config()`` where transformers has it
    (a multimodal config keeps ``num_hidden_layers`` and ``hidden_size`` in ``text_config``; the method returns
    the config itself for a text-only model), else ``model.config``; None where the model has no config."""
    config = getattr(model, "config", None)
    get_text_config = getattr(config, "get_text_config", None)
    if callable(get_text_config):
        return get_text_config()
    return config


def _language_stack(model: nn.Module) -> tuple[str, nn.Module]:
    """The dotted path (``""``: the model itself) and module of the stack the language model's forward runs:
    transformers' ``PreTrainedModel.get_decoder()`` (``language_model`` / ``text_model`` / ``decoder`` or the base
    model; transformers 5.x), so a vision or audio tower's layers are never searched. The whole model where there
    is no such method or it finds none."""
    get_decoder = getattr(model, "get_decoder", None)
    if callable(get_decoder):
        try:
            decoder = get_decoder()
        except (AttributeError, NotImplementedError, ValueError):
            decoder = None
        if isinstance(decoder, nn.Module) and decoder is not model:
            for name, module in model.named_modules():
                if module is decoder:
                    return name, decoder
    return "", model


def find_decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The dotted path (from ``model``) and the ModuleList of decoder blocks, without the caller naming either.

    Only the language model's stack is searched (:func:`_language_stack`): the known paths first, then the
    ModuleList of the text config's ``num_hidden_layers`` blocks. Raises ValueError where there is none.
    """
    prefix, stack = _language_stack(model)
    for path in KNOWN_LAYER_PATHS:
        try:
            candidate = operator.attrgetter(path)(model)
        except AttributeError:
            continue
        inside = any(module is candidate for module in stack.modules())
        if isinstance(candidate, nn.ModuleList) and len(candidate) > 0 and inside:
            return path, candidate
    expected = getattr(text_config(model), "num_hidden_layers", None)
    lists = [(name, module) for name, module in stack.named_modules() if isinstance(module, nn.ModuleList)]
    matching = [(name, module) for name, module in lists if expected is None or len(module) == expected]
    if not matching:
        raise ValueError(
            f"cannot find the decoder layers of {type(model).__name__}: no ModuleList of "
            f"{expected} blocks among {[name for name, _ in lists]}"
        )
    name, layers = max(matching, key=lambda item: len(item[1]))
    return ".".join(part for part in (prefix, name) if part), layers


def hidden_states_of(block_output: Any) -> torch.Tensor:
    """The [batch, seq, hidden] tensor inside a block's output, whichever form it takes; raises
    :class:`UnsupportedArchitecture` for a tensor of another rank (:func:`check_residual_shape`)."""
    hidden = block_output[0] if isinstance(block_output, tuple) else block_output
    assert isinstance(hidden, torch.Tensor), f"block output holds {type(hidden).__name__}, not a tensor"
    check_residual_shape(tuple(hidden.shape))
    return hidden


def check_residual_shape(
    shape: tuple[int, ...], expected: tuple[int, int, int] | None = None, where: str = "the decoder blocks"
) -> None:
    """Refuse (:class:`UnsupportedArchitecture`) a block output that is not ``[batch, seq, hidden]`` (or not
    ``expected`` where given): every edit indexes ``[row, position]``, and on a stacked tensor that would edit the
    wrong thing without an error (``h[0, -1] = 0`` on Gemma 3n's ``[4, batch, seq, hidden]`` zeroes every position
    of stream 0)."""
    if len(shape) == 3 and (expected is None or shape == expected):
        return
    wanted = "[batch, seq, hidden]" if expected is None else f"[batch, seq, hidden] = {list(expected)}"
    stacked = (
        f"; it stacks {shape[0]} streams (Gemma 3n's AltUp keeps {shape[0]} predictions of the residual stream, "
        "mixes them in every block and averages them after the last: transformers modeling_gemma3n), so no one "
        "tensor is the residual stream to steer"
        if len(shape) == 4
        else ""
    )
    raise UnsupportedArchitecture(
        f"{where} output a tensor of shape {list(shape)}, not {wanted}{stacked}: not supported"
    )


def with_hidden_states(block_output: Any, hidden: torch.Tensor) -> Any:
    """``block_output`` with its [batch, seq, hidden] tensor replaced by ``hidden``, in the same form (tuple or
    tensor): what a forward hook or a wrapper returns to edit a block's output."""
    return (hidden, *block_output[1:]) if isinstance(block_output, tuple) else hidden


def output_form_of(block_output: Any) -> BlockOutputForm:
    """``tuple`` or ``tensor``: how this transformers version returns a decoder block's output."""
    return "tuple" if isinstance(block_output, tuple) else "tensor"


def forward_with_hooks(model: nn.Module, input_ids: torch.Tensor, handles: list[Any]) -> None:
    """One forward pass of ``input_ids`` without gradients (and without the cache, where the forward takes
    ``use_cache``), then every hook ``handles`` holds removed (also when the pass raises): how a probe reads a model."""
    cache = {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}
    try:
        with torch.no_grad():
            model(input_ids=input_ids, **cache)
    finally:
        for handle in handles:
            handle.remove()


def probe_block_output(
    model: nn.Module, layer: nn.Module, input_ids: torch.Tensor
) -> tuple[BlockOutputForm, tuple[int, ...]]:
    """Run one forward pass with a plain hook on ``layer``; the form of its output and the shape of the tensor
    :func:`hidden_states_of` would take from it (not checked here)."""
    seen: list[tuple[BlockOutputForm, tuple[int, ...]]] = []

    def record(_module: nn.Module, _args: Any, output: Any) -> None:
        hidden = output[0] if isinstance(output, tuple) else output
        seen.append((output_form_of(output), tuple(getattr(hidden, "shape", ()))))

    forward_with_hooks(model, input_ids, [layer.register_forward_hook(record)])
    if not seen:
        raise ValueError(f"layer {type(layer).__name__} did not run during a forward pass")
    return seen[0]


def detect_block_output_form(model: nn.Module, layer: nn.Module, input_ids: torch.Tensor) -> BlockOutputForm:
    """Run one forward pass with a plain hook on ``layer`` and report the form of its output."""
    return probe_block_output(model, layer, input_ids)[0]


def describe(model: nn.Module, probe_ids: torch.Tensor) -> Architecture:
    """Layer path, depth, width, block output form and attention kernel of ``model``, probed with ``probe_ids``
    ([1, seq]). Sizes come from the text config (:func:`text_config`). Raises :class:`UnsupportedArchitecture`
    where a block's output is not ``[1, seq, hidden]``."""
    path, layers = find_decoder_layers(model)
    config = text_config(model)
    hidden_size = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
    max_positions = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    form, shape = probe_block_output(model, layers[0], probe_ids)
    expected = (1, int(probe_ids.shape[1]), int(hidden_size)) if hidden_size else None
    check_residual_shape(shape, expected, f"{type(model).__name__}'s decoder blocks ({path})")
    attention = getattr(getattr(model, "config", None), "_attn_implementation", None)
    return Architecture(path, len(layers), int(hidden_size or shape[-1]), form, max_positions, attention)
