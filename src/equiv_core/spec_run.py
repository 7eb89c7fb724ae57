"""Every arm of one steering spec, generated once and shared by the spec findings.

Arms: ``plain`` (nnsight plain invoke), ``iter`` (nnsight with the spec's step selector: the spec as written),
``recompute`` (nnsight without the KV cache, the edit at absolute positions re-applied at every step), ``hook``
and ``hook_recompute`` (the independent raw-hook reference, with and without the cache), and ``unsteered`` /
``unsteered_recompute`` (no edit, with and without the cache: the output to differ from, and the model's own
cached-vs-recomputed rounding). An arm that cannot write the spec is kept as "not expressible", with the reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from equiv_core.compat import NotExpressible, SpecStyle
from equiv_core.context import SteeringContext
from equiv_core.coverage import CoverageCheck, intended_touches
from equiv_core.reference import hook_generate, spec_hook_generate
from equiv_core.resolution import ResolvedSpec
from equiv_core.steering import GenerationRecord, SpecGeneration

NNSIGHT_ARMS: tuple[str, ...] = ("plain", "iter", "recompute")
STEERED_ARMS: tuple[str, ...] = (*NNSIGHT_ARMS, "hook", "hook_recompute")
CACHED = {"plain": True, "iter": True, "recompute": False, "hook": True, "hook_recompute": False}


@dataclass(frozen=True, slots=True, eq=False)
class ArmRun:
    """One steered arm: what it is, whether it could be written, what it generated and touched."""

    name: str
    description: str
    cached: bool
    generation: SpecGeneration | None  # None: not expressible
    coverage: CoverageCheck | None
    not_expressible: str = ""  # the reason, when generation is None

    @property
    def expressible(self) -> bool:
        return self.generation is not None

    @property
    def record(self) -> GenerationRecord:
        if self.generation is None:
            raise ValueError(f"arm {self.name} is not expressible: {self.not_expressible}")
        return self.generation.record

    @property
    def covers_intent(self) -> bool:
        """Expressible and touched exactly what the spec intends."""
        return self.coverage is not None and self.coverage.matches


@dataclass(frozen=True, slots=True, eq=False)
class SpecRun:
    """All arms of one spec on one prompt."""

    resolved: ResolvedSpec
    prompt_ids: tuple[int, ...]
    arms: dict[str, ArmRun]
    unsteered: GenerationRecord
    unsteered_recompute: GenerationRecord
    decode: Callable[[tuple[int, ...]], str]
    dtype: torch.dtype

    def expressible_arms(self) -> list[ArmRun]:
        return [arm for arm in self.arms.values() if arm.expressible]


def _description(name: str, resolved: ResolvedSpec) -> str:
    literal = " (literal indices)" if resolved.spec.indexing == "literal" else ""
    return {
        "plain": "nnsight plain invoke (fires on the prompt pass)",
        "iter": (
            "nnsight plain invoke (as written: --steps prompt-pass)"
            if resolved.steps.kind == "prompt-pass"
            else f"nnsight {resolved.steps.describe()}{literal}"
        ),
        "recompute": "nnsight iter[:N] without the KV cache, absolute positions re-edited every step",
        "hook": "raw PyTorch forward hook + HF generate, with the KV cache",
        "hook_recompute": "raw PyTorch forward hook + HF generate, without the KV cache",
    }[name]


def _plain_not_expressible(resolved: ResolvedSpec) -> str:
    if resolved.prompt_only:
        return ""
    generated = [position for position in resolved.positions if position >= resolved.prompt_length]
    return (
        f"a plain invoke fires only on the prompt pass; positions {generated[0]}.. are first computed at step "
        f"{generated[0] - resolved.prompt_length + 1} or later"
    )


def run_spec(context: SteeringContext, input_ids: torch.Tensor, resolved: ResolvedSpec) -> SpecRun:
    """Generate every arm once (deterministic kernels are the caller's business) and check its coverage."""
    model, pad = context.loaded.model, context.loaded.tokenizer.pad_token_id
    new_tokens, prompt_length = resolved.new_tokens, resolved.prompt_length
    arms: dict[str, ArmRun] = {}
    for name in STEERED_ARMS:
        cached = CACHED[name]
        reason = _plain_not_expressible(resolved) if name == "plain" else ""
        generation: SpecGeneration | None = None
        if not reason:
            try:
                if name.startswith("hook"):
                    generation = spec_hook_generate(model, input_ids, pad, resolved, cached)
                else:
                    style: SpecStyle = name  # type: ignore[assignment]
                    generation = context.nnsight.generate_spec(input_ids, resolved, style)
            except NotExpressible as error:
                reason = str(error)
        coverage = None
        if generation is not None:
            intended = intended_touches(resolved.positions, resolved.layers, prompt_length, new_tokens, cached)
            coverage = CoverageCheck(
                name, cached, intended, generation.touched, generation.faults, generation.passes, prompt_length
            )
        arms[name] = ArmRun(name, _description(name, resolved), cached, generation, coverage, reason)
    return SpecRun(
        resolved=resolved,
        prompt_ids=tuple(int(token) for token in input_ids[0].tolist()),
        arms=arms,
        unsteered=hook_generate(model, input_ids, new_tokens, pad, None, arm="unsteered"),
        unsteered_recompute=hook_generate(
            model, input_ids, new_tokens, pad, None, use_cache=False, arm="unsteered_recompute"
        ),
        decode=context.decode,
        dtype=context.dtype,
    )
