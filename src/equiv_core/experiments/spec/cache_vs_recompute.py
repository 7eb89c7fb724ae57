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

from equiv_core.comparison import FLOOR_MARGIN, rounding_allowance
from equiv_core.experiments.base import FindingResult
from equiv_core.experiments.spec.base import (
    SpecEvidence,
    SpecFindingConfig,
    arms_evidence,
    first_difference,
    noise_floor,
    non_finite_problems,
    row_label,
    same_input_diff,
    spec_finding,
    spec_verdict,
)
from equiv_core.spec_run import SpecRun

ID = "cache_vs_recompute"


@dataclass(frozen=True, slots=True)
class CacheVsRecomputeEvidence(SpecEvidence):
    first_differing_steps: tuple[int | None, ...]  # per row: where cached and recompute ids part (None: never)
    logits_max_abs_diff: float  # steered cached vs recompute, over the steps whose inputs were identical
    noise_floor: float  # unsteered cached vs recompute, likewise
    allowed: float
    effect: float  # steered vs unsteered (cached), over the steps whose inputs were identical

    def details(self) -> dict[str, Any]:
        return {
            "ids_equal": all(step is None for step in self.first_differing_steps),
            "first_differing_step": list(self.first_differing_steps)
            if len(self.first_differing_steps) > 1
            else self.first_differing_steps[0],
            "logits_max_abs_diff": self.logits_max_abs_diff,
            "unsteered_noise_floor": self.noise_floor,
            "allowed_logits_diff": self.allowed,
            "steering_effect": self.effect,
            "floor_margin": FLOOR_MARGIN,
        }

    def lines(self) -> list[str]:
        lines = []
        for row, (hook, recompute) in enumerate(
            zip(self.arms["hook"].rows, self.arms["hook_recompute"].rows, strict=True)
        ):
            label = f"row {row} " if len(self.prompts) > 1 else ""
            lines += [
                f"{label}hook (KV cache)     {list(hook.generation.generated_ids)} {hook.generation.text!r}",
                f"{label}hook (recompute)    {list(recompute.generation.generated_ids)} {recompute.generation.text!r}",
            ]
        lines.append(
            f"logits max abs diff {self.logits_max_abs_diff:.3g} on identical inputs; allowed {self.allowed:.3g} "
            f"({FLOOR_MARGIN:g}x the unsteered model's own cached-vs-recompute difference {self.noise_floor:.3g}, "
            f"scaled to the steered logits); the steering itself moves logits by {self.effect:.3g}"
        )
        return lines

    def metrics(self) -> dict[str, float]:
        return {"logits_max_abs_diff": self.logits_max_abs_diff, "unsteered_noise_floor": self.noise_floor}


def _allowed(run: SpecRun, floor: float) -> float:
    steered = max(float(record.step_logits.abs().max()) for record in run.arms["hook"].rows)
    unsteered = max(float(record.step_logits.abs().max()) for record in run.unsteered)
    return rounding_allowance(floor, steered, unsteered, run.dtype)


@spec_finding(ID, "steering with the KV cache equals full recompute re-applying the edit at absolute positions")
def cache_vs_recompute(run: SpecRun, config: SpecFindingConfig) -> FindingResult:
    cached_rows, recomputed_rows = run.arms["hook"].rows, run.arms["hook_recompute"].rows
    floor = noise_floor(run)
    allowed = _allowed(run, floor)
    pairs = list(zip(cached_rows, recomputed_rows, strict=True))
    differing = tuple(first_difference(cached, recomputed) for cached, recomputed in pairs)
    steered_diff = max(same_input_diff(cached, recomputed) for cached, recomputed in pairs)
    effect = max(
        same_input_diff(cached, unsteered) for cached, unsteered in zip(cached_rows, run.unsteered, strict=True)
    )
    problems = non_finite_problems(run)
    if not problems and not steered_diff <= allowed:
        problems.append(
            f"cached and recomputed logits differ by {steered_diff:.3g} on identical inputs, beyond the allowed "
            f"{allowed:.3g} ({FLOOR_MARGIN:g}x the unsteered model's own difference {floor:.3g}): the edit did not "
            "land on the same positions"
        )
    evidence = CacheVsRecomputeEvidence(
        arms_evidence(run), run.resolved.batch.prompts, differing, steered_diff, floor, allowed, effect
    )
    not_applicable = ""
    if run.resolved.new_tokens < 2:
        not_applicable = "needs at least 2 new tokens: with 1 the cache is never read"
    elif not problems and math.isfinite(effect) and effect <= allowed:
        not_applicable = (
            f"the steering moves logits by only {effect:.3g}, within the rounding allowed between cached and "
            f"recompute ({allowed:.3g}): this check cannot tell them from no steering"
        )
    parted = [(row, step) for row, step in enumerate(differing) if step is not None]
    if not parted:
        success = (
            f"identical ids: the cached edit persists exactly as recompute re-applies it; logits differ by "
            f"{steered_diff:.3g} (allowed {allowed:.3g}; the steering moves them by {effect:.3g})"
        )
    else:
        where = ", ".join(f"{row_label(run, row)}step {step}" for row, step in parted)
        success = (
            f"differs from {where}, as expected because cached and recomputed matmuls round differently: logits "
            f"differ by only {steered_diff:.3g} on identical inputs (allowed {allowed:.3g}), enough to swap two "
            "near-tied tokens"
        )
    return spec_verdict(ID, config, problems, success, evidence, applicable=not_applicable)
