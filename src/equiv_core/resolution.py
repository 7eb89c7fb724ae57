"""A steering spec resolved against one model and prompt: absolute layers and positions, the concrete step
selector, and the steering vectors. Every arm receives the same resolved spec."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from equiv_core.spec import SteeringSpec, Steps
from equiv_core.vectors import resolve_vectors

if TYPE_CHECKING:  # the context holds the nnsight arms, which take resolved specs: a type-only import
    from equiv_core.context import SteeringContext


@dataclass(frozen=True, slots=True, eq=False)
class ResolvedSpec:
    """``spec`` for a ``prompt_length``-token prompt and ``new_tokens`` generated tokens.

    ``layers`` are absolute and ascending (nnsight must visit blocks in execution order); ``vectors`` is
    [len(layers), hidden] in the model's dtype (row ``i`` for ``layers[i]``), or None for ops without a vector.
    """

    spec: SteeringSpec
    layers: tuple[int, ...]
    positions: tuple[int, ...]
    steps: Steps
    vectors: torch.Tensor | None
    prompt_length: int
    new_tokens: int

    @property
    def op(self) -> str:
        return self.spec.op

    @property
    def scale(self) -> float:
        return self.spec.effective_scale

    @property
    def prompt_only(self) -> bool:
        """Every intended position is a prompt position: a plain invoke can express the spec."""
        return all(position < self.prompt_length for position in self.positions)

    @property
    def literal_indices(self) -> tuple[int, ...]:
        """For ``indexing = literal``: the integers as the spec writes them, used as indices into each pass."""
        return self.spec.positions.indices

    def vector_for(self, layer: int) -> torch.Tensor | None:
        return None if self.vectors is None else self.vectors[self.layers.index(layer)]

    def to_dict(self) -> dict[str, Any]:
        vector_norms = None if self.vectors is None else [float(row.float().norm()) for row in self.vectors]
        return {
            **self.spec.to_dict(),
            "description": self.spec.describe(),
            "resolved_layers": list(self.layers),
            "resolved_positions": list(self.positions),
            "resolved_steps": self.steps.describe(),
            "vector_norms": vector_norms,
            "prompt_length": self.prompt_length,
            "new_tokens": self.new_tokens,
        }


def resolve_spec(spec: SteeringSpec, context: SteeringContext, prompt_length: int, new_tokens: int) -> ResolvedSpec:
    """Resolve ``spec`` for this model (raises UserInputError for a layer, position or vector that does not fit)."""
    layers = tuple(sorted(spec.layers.resolve(context.architecture.num_layers)))
    positions = spec.check_fits(prompt_length, new_tokens)
    vectors = None if spec.vector is None else resolve_vectors(spec.vector, context, layers)
    prompt_only = all(position < prompt_length for position in positions)
    return ResolvedSpec(spec, layers, positions, spec.steps.concrete(prompt_only), vectors, prompt_length, new_tokens)
