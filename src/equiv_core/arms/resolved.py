"""A steering spec resolved for one run: absolute layers, each row's positions, the concrete step selector, the
steering vectors, the prompt batch and how tokens are chosen. Every arm receives the same resolved spec; it is made
by :func:`equiv_core.arms.resolution.resolve_spec`, which needs a loaded model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from equiv_core.arms.steering import apply_op
from equiv_core.config.decoding import GREEDY, Decoding
from equiv_core.models.inputs import PromptBatch
from equiv_core.spec.steering_spec import SteeringSpec, Steps


def prompt_only(positions: tuple[tuple[int, ...], ...], lengths: tuple[int, ...]) -> bool:
    """Every position of every row (``positions[r]``, row-relative) is before that row's prompt length: the spec
    touches only the prompt, which a plain invoke can express."""
    return all(position < lengths[row] for row, row_positions in enumerate(positions) for position in row_positions)


@dataclass(frozen=True, slots=True, eq=False)
class ResolvedSpec:
    """``spec`` for ``batch`` and ``new_tokens`` generated tokens.

    ``layers`` are absolute and ascending (nnsight must visit blocks in execution order); ``vectors`` is
    [len(layers), hidden] in the model's dtype (row ``i`` for ``layers[i]``), or None for ops without a vector;
    ``positions[r]`` are row ``r``'s row-relative positions (see :mod:`equiv_core.models.inputs`).
    """

    spec: SteeringSpec
    layers: tuple[int, ...]
    positions: tuple[tuple[int, ...], ...]
    steps: Steps
    vectors: torch.Tensor | None
    batch: PromptBatch
    new_tokens: int
    decoding: Decoding = GREEDY
    eos_ids: tuple[int, ...] = ()  # where a row ends, with decoding.stop_at_eos

    @property
    def op(self) -> str:
        return self.spec.op

    @property
    def scale(self) -> float:
        return self.spec.effective_scale

    @property
    def prompt_only(self) -> bool:
        """Every intended position of every row is a prompt position: a plain invoke can express the spec."""
        return prompt_only(self.positions, self.batch.lengths)

    @property
    def literal_indices(self) -> tuple[int, ...]:
        """For ``indexing = literal``: the integers as the spec writes them, used as indices into each pass."""
        return self.spec.positions.indices

    def vector_for(self, layer: int) -> torch.Tensor | None:
        return None if self.vectors is None else self.vectors[self.layers.index(layer)]

    def leaves_unchanged(self, layer: int, value: torch.Tensor) -> bool:
        """Whether the spec's edit at ``layer`` writes exactly ``value`` ([hidden]) back: zeroing a zero state,
        adding a zero vector, ... (such an edit cannot be told from no edit)."""
        edited = apply_op(self.op, self.scale, value.unsqueeze(0), self.vector_for(layer))[0]
        return bool(torch.equal(edited, value))

    def alone(self, row: int) -> ResolvedSpec:
        """This spec for row ``row``'s prompt run alone (same vectors and decoding)."""
        return ResolvedSpec(
            self.spec,
            self.layers,
            (self.positions[row],),
            self.steps,
            self.vectors,
            self.batch.alone(row),
            self.new_tokens,
            self.decoding,
            self.eos_ids,
        )

    def to_dict(self) -> dict[str, Any]:
        vector_norms = None if self.vectors is None else [float(row.float().norm()) for row in self.vectors]
        positions = [list(row) for row in self.positions]
        return {
            **self.spec.to_dict(),
            "description": self.spec.describe(),
            "resolved_layers": list(self.layers),
            "resolved_positions": positions[0] if len(positions) == 1 else positions,
            "resolved_steps": self.steps.describe(),
            "vector_norms": vector_norms,
            "prompt_lengths": list(self.batch.lengths),
            "padding": self.batch.padding,
            "new_tokens": self.new_tokens,
            "decoding": self.decoding.to_dict(),
        }
