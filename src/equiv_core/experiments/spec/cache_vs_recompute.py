"""Spec finding ``cache_vs_recompute``: steering with the KV cache equals full recompute re-applying the edit.

With the cache each position is edited once, when first computed, and later steps read its edited keys and
values; without the cache every step recomputes every position and the edit must be re-applied at its absolute
position. Both raw-hook arms implement the spec's intent that way, so on identical inputs their logits may differ
by rounding only (different matmul shapes accumulate differently). The yardstick for "rounding only" is measured
in the same run: the unsteered model's own cached-vs-recompute logits difference, scaled by how much larger the
steered logits are (rounding grows with magnitude), times :data:`FLOOR_MARGIN`. The check needs power: when the
edit itself moves the logits by no more than that yardstick, cached and recompute cannot be told from no
steering, and the finding is NOT APPLICABLE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from equiv_core.experiments.base import FindingResult
from equiv_core.experiments.spec.base import (
    SpecEvidence,
    SpecFindingConfig,
    arms_evidence,
    first_difference,
    noise_floor,
    non_finite_problems,
    same_input_diff,
    spec_finding,
    spec_verdict,
)
from equiv_core.spec_run import SpecRun

ID = "cache_vs_recompute"
# Rounding differences are a maximum over thousands of logits, which fluctuates between two runs by a small
# factor; a misplaced edit moves logits by orders of magnitude more (see the power check).
FLOOR_MARGIN = 4.0


@dataclass(frozen=True, slots=True)
class CacheVsRecomputeEvidence(SpecEvidence):
    ids_equal: bool
    first_differing_step: int | None
    logits_max_abs_diff: float  # steered cached vs recompute, over the steps whose inputs were identical
    noise_floor: float  # unsteered cached vs recompute, likewise
    allowed: float
    effect: float  # steered vs unsteered (cached), over the steps whose inputs were identical

    def details(self) -> dict[str, Any]:
        return {
            "ids_equal": self.ids_equal,
            "first_differing_step": self.first_differing_step,
            "logits_max_abs_diff": self.logits_max_abs_diff,
            "unsteered_noise_floor": self.noise_floor,
            "allowed_logits_diff": self.allowed,
            "steering_effect": self.effect,
            "floor_margin": FLOOR_MARGIN,
        }

    def lines(self) -> list[str]:
        hook, recompute = self.arms["hook"].generation, self.arms["hook_recompute"].generation
        assert hook is not None and recompute is not None
        return [
            f"hook (KV cache)     {list(hook.generated_ids)} {hook.text!r}",
            f"hook (recompute)    {list(recompute.generated_ids)} {recompute.text!r}",
            f"logits max abs diff {self.logits_max_abs_diff:.3g} on identical inputs; allowed {self.allowed:.3g} "
            f"({FLOOR_MARGIN:g}x the unsteered model's own cached-vs-recompute difference {self.noise_floor:.3g}, "
            f"scaled to the steered logits); the steering itself moves logits by {self.effect:.3g}",
        ]

    def metrics(self) -> dict[str, float]:
        return {"logits_max_abs_diff": self.logits_max_abs_diff, "unsteered_noise_floor": self.noise_floor}


def _allowed(run: SpecRun, floor: float) -> float:
    cached = run.arms["hook"].record.step_logits
    steered, unsteered = float(cached.abs().max()), float(run.unsteered.step_logits.abs().max())
    magnitude = max(1.0, steered / unsteered) if unsteered > 0 else 1.0
    rounding_unit = torch.finfo(run.dtype).eps * steered
    return FLOOR_MARGIN * max(floor * magnitude, 2 * rounding_unit)


@spec_finding(ID, "steering with the KV cache equals full recompute re-applying the edit at absolute positions")
def cache_vs_recompute(run: SpecRun, config: SpecFindingConfig) -> FindingResult:
    cached, recomputed = run.arms["hook"].record, run.arms["hook_recompute"].record
    floor = noise_floor(run)
    allowed = _allowed(run, floor)
    differing = first_difference(cached, recomputed)
    steered_diff = same_input_diff(cached, recomputed)
    effect = same_input_diff(cached, run.unsteered)
    problems = non_finite_problems(run)
    if not problems and not steered_diff <= allowed:
        problems.append(
            f"cached and recomputed logits differ by {steered_diff:.3g} on identical inputs, beyond the allowed "
            f"{allowed:.3g} ({FLOOR_MARGIN:g}x the unsteered model's own difference {floor:.3g}): the edit did not "
            "land on the same positions"
        )
    evidence = CacheVsRecomputeEvidence(
        arms_evidence(run), differing is None, differing, steered_diff, floor, allowed, effect
    )
    not_applicable = ""
    if run.resolved.new_tokens < 2:
        not_applicable = "needs at least 2 new tokens: with 1 the cache is never read"
    elif not problems and math.isfinite(effect) and effect <= allowed:
        not_applicable = (
            f"the steering moves logits by only {effect:.3g}, within the rounding allowed between cached and "
            f"recompute ({allowed:.3g}): this check cannot tell them from no steering"
        )
    if differing is None:
        success = (
            f"identical ids: the cached edit persists exactly as recompute re-applies it; logits differ by "
            f"{steered_diff:.3g} (allowed {allowed:.3g}; the steering moves them by {effect:.3g})"
        )
    else:
        success = (
            f"differs from step {differing}, as expected because cached and recomputed matmuls round differently: "
            f"logits differ by only {steered_diff:.3g} on identical inputs (allowed {allowed:.3g}), enough to swap "
            "two near-tied tokens"
        )
    return spec_verdict(ID, config, problems, success, evidence, applicable=not_applicable)
