"""steering-vectors (0.12.2): the intents written as ``SteeringVector(layer_activations={layer: vector},
layer_type="decoder_block").apply(model, ...)``, the context manager its docs run ``model.generate`` in
(docs/basic_usage.rst@v0.12.2 lines 35-42, https://steering-vectors.github.io/steering-vectors/basic_usage.html).

What the library does (steering_vectors/steering_vector.py@0.12.2):

- ``apply`` (lines 111-152) calls ``patch_activations`` (43-109) and, in ``finally``, ``SteeringPatchHandle.remove``
  (30-33): one ``register_forward_hook`` per entry of ``layer_activations`` (102-108), all removed on exit.
- The block is found by guessing, not from the model's class: ``guess_and_enhance_layer_config``
  (layer_matching.py:172-184) counts the module names matching ``^([^\\d]+)\\.([\\d]+)(.*)$`` and keeps the most
  frequent, shortest template (120-137): ``transformer.h.{num}`` for GPT-2, ``model.layers.{num}`` for Llama /
  SmolLM2; ``collect_matching_layers`` (11-28) then lists ``{num}`` = 0, 1, ... while the name exists.
- The hook (``_create_additive_hook``, 188-215) takes ``outputs[0]`` when the block returns a tuple and the tensor
  itself otherwise (torch_utils.py:5-6, ``untuple_tensor``), so both transformers 4.x block forms are handled; it
  edits that tensor in place (``original_tensor[None] = original_tensor + mask * delta``, line 212) and returns the
  same ``outputs`` object. ``delta`` is ``multiplier * vector`` (line 99) or, with ``operator``, what the operator
  returns for the whole ``[batch, seq, hidden]`` activation (199-200).
- Positions: ``mask = torch.zeros(seq)``, ``mask[token_indices] = 1`` (204-205) with ``token_indices`` defaulting
  to ``slice(min_token_index, None)`` (83-85; ``apply``'s ``min_token_index`` defaults to 0, line 118). ``seq`` is
  the length of the *current* forward: under the KV cache each decode pass has one position, so an absolute index
  ``>= 1`` selects nothing there (a slice) or raises ``IndexError`` (a list): steering-vectors#60, where the
  maintainer answers that only steering every token is unaffected. ``apply`` with ``token_indices`` must also pass
  ``min_token_index=None`` (it asserts that not both are set, 76-78), as #60's reporter does.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import torch
from steering_vectors import SteeringVector, ablation_operator

from equiv_core.conformance.adapter import Adapter, Variant, Way
from equiv_core.conformance.intents import Intent
from equiv_core.conformance.vectors import SteeringTask
from equiv_core.models.architecture import text_config

BASIC = "docs/basic_usage.rst@v0.12.2 (https://steering-vectors.github.io/steering-vectors/basic_usage.html)"
ADVANCED = "docs/advanced_usage.rst@v0.12.2 (https://steering-vectors.github.io/steering-vectors/advanced_usage.html)"
ISSUE_60 = "https://github.com/steering-vectors/steering-vectors/issues/60"
HooksForm = Callable[[Any, Any], AbstractContextManager[None]]


def _apply(activations: Callable[[Any], dict[int, torch.Tensor]], **apply_kwargs: Any) -> HooksForm:
    """A hooks-form function: ``SteeringVector(layer_activations=..., layer_type="decoder_block").apply(model,
    **apply_kwargs)``, the library's own context manager (its hooks removed on exit)."""

    def steer(model: Any, _tokenizer: Any) -> AbstractContextManager[None]:
        vector = SteeringVector(layer_activations=activations(model), layer_type="decoder_block")
        manager: AbstractContextManager[None] = vector.apply(model, **apply_kwargs)
        return manager

    return steer


def _zeroing(activation: torch.Tensor, _vector: torch.Tensor) -> torch.Tensor:
    """A custom ``operator`` (docs/advanced_usage.rst lines 19-36: "the result of this function will be added to the
    activation"): adding ``-h`` leaves ``h + (-h) = 0`` at the selected positions, the vector unused."""
    return -activation


def _placeholder(layer: int) -> Callable[[Any], dict[int, torch.Tensor]]:
    """``{layer: zeros(hidden)}``: a SteeringVector needs a vector per layer even when its operator ignores it."""

    def activations(model: Any) -> dict[int, torch.Tensor]:
        hidden = text_config(model).hidden_size
        return {layer: torch.zeros(hidden, dtype=model.dtype, device=model.device)}

    return activations


def actadd_all(task: SteeringTask) -> HooksForm:
    """``with vector.apply(model, multiplier=scale): model.generate(...)`` (basic_usage.rst 35-42, "Magnitude
    scaling" 90-109): ``min_token_index=0``, every position of every pass, prefill and decode alike."""
    assert task.vectors is not None
    layer, vector = task.layers[0], task.vectors[0]
    return _apply(lambda _model: {layer: vector}, multiplier=task.scale)


def caa_generated(task: SteeringTask) -> HooksForm:
    """``apply(model, multiplier=scale, min_token_index=n - 1)``: advanced_usage.rst 4-16, "Only apply steering to
    later tokens ... when the model is responding to a prompt". ``slice(n - 1, None)`` of each pass's own positions:
    position ``n - 1`` at the prefill, and nothing at a one-position decode pass (steering-vectors#60)."""
    assert task.vectors is not None
    layer, vector = task.layers[0], task.vectors[0]
    return _apply(lambda _model: {layer: vector}, multiplier=task.scale, min_token_index=task.prompt_length - 1)


def caa_generated_last_of_each_pass(task: SteeringTask) -> HooksForm:
    """``apply(model, multiplier=scale, token_indices=[-1], min_token_index=None)``: the last position of every
    forward, which under the KV cache is ``n - 1`` at the prefill and the newest token at each decode pass."""
    assert task.vectors is not None
    layer, vector = task.layers[0], task.vectors[0]
    return _apply(lambda _model: {layer: vector}, multiplier=task.scale, token_indices=[-1], min_token_index=None)


def original_zero(task: SteeringTask) -> HooksForm:
    """``apply(model, operator=<-h>, token_indices=[n - 1], min_token_index=None)``: a custom operator
    (advanced_usage.rst 19-36) at the listed index (``token_indices``, steering_vector.py:68, PR #21). The prefill
    is edited as meant; the first decode pass raises ``IndexError: index n-1 is out of bounds for dimension 0 with
    size 1`` (steering_vector.py:204-205; steering-vectors#60, the same call)."""
    last = task.prompt_length - 1
    return _apply(_placeholder(task.layers[0]), operator=_zeroing, token_indices=[last], min_token_index=None)


def original_zero_prefill_slice(task: SteeringTask) -> HooksForm:
    """``token_indices=slice(n - 1, n)``: position ``n - 1`` at the prefill; empty at every one-position decode
    pass, so the edit is the prefill's only (needs a prompt of at least 2 tokens: with one, slice(0, 1) would also
    select each decode pass's token)."""
    last = task.prompt_length - 1
    return _apply(
        _placeholder(task.layers[0]), operator=_zeroing, token_indices=slice(last, last + 1), min_token_index=None
    )


def ablate_all(task: SteeringTask) -> HooksForm:
    """One SteeringVector with a direction per block, ``apply(model, operator=ablation_operator())``
    (advanced_usage.rst 39-49; steering_operators.py:19-31@0.12.2: ``delta = -d' (h . d')`` with ``d' = d/|d|``,
    the multiplier ignored), every position of every pass (``min_token_index=0``)."""
    assert task.vectors is not None
    directions = dict(zip(task.layers, task.vectors, strict=True))
    return _apply(lambda _model: directions, operator=ablation_operator())


ADAPTER = Adapter(
    distribution="steering-vectors",
    ways=(
        Way(Intent.ACTADD_ALL, BASIC, actadd_all),
        Way(Intent.CAA_GENERATED, ADVANCED, caa_generated),
        Way(
            Intent.CAA_GENERATED,
            ISSUE_60,
            caa_generated_last_of_each_pass,
            variant=Variant.WORKAROUND,
            note="token_indices=[-1]: the last position of each pass (n-1 at prefill, the newest token per decode)",
        ),
        Way(Intent.ORIGINAL_ZERO, ADVANCED, original_zero),
        Way(
            Intent.ORIGINAL_ZERO,
            ISSUE_60,
            original_zero_prefill_slice,
            variant=Variant.WORKAROUND,
            note="token_indices=slice(n-1, n): empty on each one-position decode pass, so prefill only",
        ),
        Way(Intent.ABLATE_ALL, ADVANCED, ablate_all),
    ),
)
