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
from equiv_core.models.sites import SiteModule
from equiv_core.spec.steering_spec import SCALE_OPS, SteeringSpec, Steps


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
    ``site_norms[i]`` is the mean L2 norm of the unsteered tensor at the site of ``layers[i]`` (the residual
    stream after the block, by default) on the prompts (:func:`equiv_core.arms.norms.mean_site_norms`), what a
    relative scale (``4xnorm``) multiplies; ``sites[i]`` is where that site is on this model. ``vectors`` are as wide
    as the edited part of the site's tensor.
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
    site_norms: tuple[float, ...] = ()  # per steered layer; empty only where nothing was measured
    sites: tuple[SiteModule, ...] = ()  # per steered layer: where the spec's site is on this model, what it is
    prefix_cache: Any = None  # with --prefix: the KV cache of the prefix, prefilled once (arms.prefix.prefill)

    @property
    def op(self) -> str:
        return self.spec.op

    def scale_for(self, layer: int) -> float:
        """The absolute scale :func:`~equiv_core.arms.steering.apply_op` takes at ``layer``: the spec's scale, or for
        a scale in multiples of the residual norm ``k`` (``kxnorm``) with ``N`` the layer's residual norm: ``k N /
        |v|`` for add (the added vector's norm is ``k N``) and ``k N`` for clamp (the component is set to ``k N``).
        Raises ValueError for a relative scale where no norm was measured."""
        spec = self.spec
        if spec.scale_unit == "absolute":
            return spec.effective_scale
        if not self.site_norms:
            raise ValueError("a scale relative to the residual norm needs site_norms")
        index = self.layers.index(layer)
        norm = self.site_norms[index]
        if spec.op == "clamp":
            return spec.effective_scale * norm
        vector = self.vector_for(layer)
        assert vector is not None, "a relative scale is refused for ops without a vector"
        return spec.effective_scale * norm / float(vector.float().norm())

    def steering_norms(self) -> tuple[float, ...] | None:
        """Per steered layer, the norm of what ``add`` adds (``|scale v|``), or None for other ops."""
        if self.op != "add" or self.vectors is None:
            return None
        return tuple(
            abs(self.scale_for(layer)) * float(vector.float().norm())
            for layer, vector in zip(self.layers, self.vectors, strict=True)
        )

    @property
    def prompt_only(self) -> bool:
        """Every intended position of every row is a prompt position: a plain invoke can express the spec."""
        return prompt_only(self.positions, self.batch.lengths)

    @property
    def literal_indices(self) -> tuple[int, ...]:
        """For ``indexing = literal``: the integers as the spec writes them, used as indices into each pass."""
        return self.spec.positions.indices

    def site_for(self, layer: int) -> SiteModule:
        """Where the spec's site is at ``layer`` (ValueError where sites were not resolved)."""
        if not self.sites:
            raise ValueError("the spec's sites were not resolved")
        return self.sites[self.layers.index(layer)]

    def vector_for(self, layer: int) -> torch.Tensor | None:
        return None if self.vectors is None else self.vectors[self.layers.index(layer)]

    def leaves_unchanged(self, layer: int, value: torch.Tensor) -> bool:
        """Whether the spec's edit at ``layer`` writes exactly ``value`` ([hidden]) back: zeroing a zero state,
        adding a zero vector, ... (such an edit cannot be told from no edit)."""
        edited = apply_op(self.op, self.scale_for(layer), value.unsqueeze(0), self.vector_for(layer))[0]
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
            self.site_norms,
            self.sites,
            self.prefix_cache,
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
            "site_norms": list(self.site_norms),
            "scales": [self.scale_for(layer) for layer in self.layers] if self.op in SCALE_OPS else None,
            "steering_norms": None if (norms := self.steering_norms()) is None else list(norms),
            **({"sites": [site.to_dict() for site in self.sites]} if not self.spec.site.is_default else {}),
            "prompt_lengths": list(self.batch.lengths),
            **({"prefix_length": self.batch.prefix_length} if self.batch.prefix_length else {}),
            "padding": self.batch.padding,
            "new_tokens": self.new_tokens,
            "decoding": self.decoding.to_dict(),
        }
