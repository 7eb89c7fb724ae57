"""The benchmark arms (:data:`~equiv_core.config.catalog.BENCH_ARMS`; the names are
:class:`~equiv_core.config.catalog.ArmName`'s): one way of generating each, all the same edit (zero layer L at the
last prompt token): ``plain`` at position -1, ``iter0`` and ``recompute`` at n-1, ``hook`` (the reference),
``floor`` (:mod:`equiv_core.arms.floor`, so the cost of tracing shows against the fastest honest way), and
``unsteered`` (the cost of generation itself).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.steering import Edit, GenerationRecord
from equiv_core.config.catalog import BENCH_ARMS, ArmName
from equiv_core.support.registry import Registry

ArmFunction = Callable[[SteeringContext, torch.Tensor, int, int], GenerationRecord]


@dataclass(frozen=True, slots=True)
class Arm:
    """A named way to generate ``new_tokens`` tokens from ``input_ids`` with the edit at ``layer``."""

    name: ArmName
    steered: bool
    description: str
    run: ArmFunction
    deterministic_check: bool = True  # False: its correctness pass runs with default kernels (see floor)


ARMS: Registry[Arm] = Registry("arm", BENCH_ARMS)


def _last(input_ids: torch.Tensor) -> int:
    return int(input_ids.shape[1]) - 1


def _plain(context: SteeringContext, input_ids: torch.Tensor, new_tokens: int, layer: int) -> GenerationRecord:
    return context.nnsight.generate(input_ids, new_tokens, Edit(layer, -1), "prompt", arm=ArmName.PLAIN)


def _iter0(context: SteeringContext, input_ids: torch.Tensor, new_tokens: int, layer: int) -> GenerationRecord:
    return context.nnsight.generate(input_ids, new_tokens, Edit(layer, _last(input_ids)), "step0", arm=ArmName.ITER0)


def _recompute(context: SteeringContext, input_ids: torch.Tensor, new_tokens: int, layer: int) -> GenerationRecord:
    edit = Edit(layer, _last(input_ids))
    return context.nnsight.generate(input_ids, new_tokens, edit, "every_step", use_cache=False, arm=ArmName.RECOMPUTE)


def _hook(context: SteeringContext, input_ids: torch.Tensor, new_tokens: int, layer: int) -> GenerationRecord:
    return context.reference(input_ids, new_tokens, Edit(layer, _last(input_ids)))


def _floor(context: SteeringContext, input_ids: torch.Tensor, new_tokens: int, layer: int) -> GenerationRecord:
    from equiv_core.arms.floor import floor_generate

    return floor_generate(context, input_ids, new_tokens, layer)


def _unsteered(context: SteeringContext, input_ids: torch.Tensor, new_tokens: int, _layer: int) -> GenerationRecord:
    return context.unsteered(input_ids, new_tokens)


for _arm in (
    Arm(ArmName.PLAIN, True, "nnsight plain invoke, position -1, prompt pass only", _plain),
    Arm(ArmName.ITER0, True, "nnsight iter[0], position n-1", _iter0),
    Arm(ArmName.RECOMPUTE, True, "nnsight, use_cache=False, edit at n-1 on every step", _recompute),
    Arm(ArmName.HOOK, True, "raw PyTorch forward hook + HF generate (the reference)", _hook),
    # Compiled once, with default kernels: Dynamo would recompile when the deterministic flag flips.
    Arm(
        ArmName.FLOOR,
        True,
        "torch.compile + static KV cache, the edit inside the graph",
        _floor,
        deterministic_check=False,
    ),
    Arm(ArmName.UNSTEERED, False, "HF generate, no edit", _unsteered),
):
    ARMS.add(_arm.name, _arm)
