"""Finding decoder layers and detecting the block output form, including the tuple form of older transformers."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from nnsight import NNsight
from torch import nn
from toy_models import TupleModel

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.nnsight import hidden_of_envoy
from equiv_core.arms.reference import edit_hook
from equiv_core.arms.steering import Edit
from equiv_core.models.architecture import (
    detect_block_output_form,
    find_decoder_layers,
    hidden_states_of,
    output_form_of,
)


class Unusual(nn.Module):
    """Layers at a path no known model uses, found by the fallback search."""

    def __init__(self) -> None:
        super().__init__()
        self.config = type("Config", (), {"num_hidden_layers": 3})()
        self.stack = nn.Module()
        self.stack.blocks = nn.ModuleList(nn.Identity() for _ in range(3))
        self.other = nn.ModuleList(nn.Identity() for _ in range(2))


def test_layers_found_for_gpt2_and_llama(tiny_context: SteeringContext) -> None:
    path, layers = find_decoder_layers(tiny_context.loaded.model)
    expected = "transformer.h" if "gpt2" in tiny_context.loaded.name else "model.layers"
    assert path == expected
    assert len(layers) == tiny_context.architecture.num_layers == 2


def test_layers_found_by_search_when_the_path_is_unknown() -> None:
    path, layers = find_decoder_layers(Unusual())
    assert path == "stack.blocks"
    assert len(layers) == 3


def test_current_transformers_blocks_return_tensors(tiny_context: SteeringContext) -> None:
    assert tiny_context.architecture.block_output_form == "tensor"


def test_tuple_form_is_detected() -> None:
    model = TupleModel()
    assert detect_block_output_form(model, model.transformer.h[0], torch.tensor([[1, 2, 3]])) == "tuple"


def test_hidden_states_of_both_forms() -> None:
    hidden = torch.ones(1, 3, 4)
    assert hidden_states_of(hidden) is hidden
    assert hidden_states_of((hidden, None)) is hidden
    assert output_form_of((hidden,)) == "tuple"
    assert output_form_of(hidden) == "tensor"


def _capture_block_output(model: TupleModel, layer: int, input_ids: torch.Tensor) -> torch.Tensor:
    captured: list[torch.Tensor] = []

    def keep(_module: nn.Module, _args: Any, output: Any) -> None:
        captured.append(hidden_states_of(output).detach().clone())

    handle = model.transformer.h[layer].register_forward_hook(keep)
    try:
        with torch.no_grad():
            model(input_ids)
    finally:
        handle.remove()
    return captured[0]


@pytest.mark.parametrize("position", [0, 2, -1])
def test_reference_hook_edits_batch0_position_in_tuple_form(position: int) -> None:
    """On a tuple-returning block the hook must zero (batch 0, position), not batch row 0 as ``output[0][p]``."""
    model = TupleModel()
    input_ids = torch.tensor([[1, 2, 3, 4]])
    with edit_hook(model, Edit(1, position), "every_step"):
        edited = _capture_block_output(model, 1, input_ids)
    clean = _capture_block_output(model, 1, input_ids)
    assert torch.count_nonzero(edited[0, position]) == 0
    others = [index for index in range(4) if index != position % 4]
    assert torch.equal(edited[0, others], clean[0, others])


def test_nnsight_edit_in_tuple_form_matches_the_reference_hook() -> None:
    """The nnsight arms' hidden-state access (arms/nnsight.py) in a real nnsight trace, on a tuple-returning block."""
    model = TupleModel()
    input_ids = torch.tensor([[1, 2, 3, 4]])
    edit = Edit(0, -1)
    with torch.no_grad(), edit_hook(model, edit, "every_step"):
        expected = model(input_ids)
    wrapped = NNsight(model)
    with torch.no_grad():
        with wrapped.trace(input_ids):
            edit.apply(hidden_of_envoy(wrapped.transformer.h[0], "tuple"))
            logits = wrapped.output.save()
    assert torch.equal(torch.as_tensor(logits), expected)
    with torch.no_grad():
        assert not torch.equal(model(input_ids), expected)
