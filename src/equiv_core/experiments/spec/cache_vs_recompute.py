"""Spec finding ``cache_vs_recompute``: steering with the KV cache equals full recompute re-applying the edit.

With the cache each position is edited once, when first computed, and later steps read its edited keys and
values; without the cache every step recomputes every position and the edit must be re-applied at its absolute
position. Both raw-hook arms implement the spec's intent that way, so their token ids must agree. Their logits
differ by rounding only (different matmul shapes accumulate differently), and the yardstick for "rounding only"
is measured in the same run: the unsteered model's own cached-vs-recompute logits difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from equiv_core.experiments.base import FindingResult
from equiv_core.experiments.spec.base import SpecEvidence, SpecFindingConfig, arms_evidence, spec_finding, spec_verdict
from equiv_core.spec_run import SpecRun
from equiv_core.steering import GenerationRecord

ID = "cache_vs_recompute"
# The steered residual stream can be several times larger than the unsteered one, and rounding grows with it.
FLOOR_MARGIN = 4.0


@dataclass(frozen=True, slots=True)
class CacheVsRecomputeEvidence(SpecEvidence):
    ids_equal: bool
    first_differing_step: int | None
    logits_max_abs_diff: float  # steered cached vs recompute, over the steps whose inputs were identical
    noise_floor: float  # unsteered cached vs recompute, likewise
    allowed: float  # FLOOR_MARGIN x the floor (at least a few units of the dtype's rounding)

    def details(self) -> dict[str, Any]:
        return {
            "ids_equal": self.ids_equal,
            "first_differing_step": self.first_differing_step,
            "logits_max_abs_diff": self.logits_max_abs_diff,
            "unsteered_noise_floor": self.noise_floor,
            "allowed_logits_diff": self.allowed,
            "floor_margin": FLOOR_MARGIN,
        }

    def lines(self) -> list[str]:
        hook, recompute = self.arms["hook"].generation, self.arms["hook_recompute"].generation
        assert hook is not None and recompute is not None
        return [
            f"hook (KV cache)     {list(hook.generated_ids)} {hook.text!r}",
            f"hook (recompute)    {list(recompute.generated_ids)} {recompute.text!r}",
            f"logits max abs diff {self.logits_max_abs_diff:.3g} (steps with identical inputs); the unsteered "
            f"model's own cached-vs-recompute difference {self.noise_floor:.3g}, allowed {self.allowed:.3g}",
        ]

    def metrics(self) -> dict[str, float]:
        return {"logits_max_abs_diff": self.logits_max_abs_diff, "unsteered_noise_floor": self.noise_floor}


def _first_difference(first: GenerationRecord, second: GenerationRecord) -> int | None:
    pairs = zip(first.generated_ids, second.generated_ids, strict=True)
    return next((step for step, (a, b) in enumerate(pairs) if a != b), None)


def _same_input_diff(first: GenerationRecord, second: GenerationRecord) -> float:
    """Max abs logits difference over the steps whose inputs were identical: up to and including the first step
    whose chosen tokens differ (its input was still the same prefix)."""
    differing = _first_difference(first, second)
    steps = len(first.generated_ids) if differing is None else differing + 1
    return float((first.step_logits[:steps] - second.step_logits[:steps]).abs().max())


@spec_finding(ID, "steering with the KV cache equals full recompute re-applying the edit at absolute positions")
def cache_vs_recompute(run: SpecRun, config: SpecFindingConfig) -> FindingResult:
    cached, recomputed = run.arms["hook"].record, run.arms["hook_recompute"].record
    floor = _same_input_diff(run.unsteered, run.unsteered_recompute)
    rounding_unit = torch.finfo(run.dtype).eps * float(cached.step_logits.abs().max())
    allowed = FLOOR_MARGIN * max(floor, 2 * rounding_unit)
    differing = _first_difference(cached, recomputed)
    steered_diff = _same_input_diff(cached, recomputed)
    problems = []
    if steered_diff > allowed:
        problems.append(
            f"cached and recomputed logits differ by {steered_diff:.3g} on identical inputs, beyond {FLOOR_MARGIN:g}x "
            f"the unsteered model's own difference ({floor:.3g}): the edit did not land on the same positions"
        )
    evidence = CacheVsRecomputeEvidence(arms_evidence(run), differing is None, differing, steered_diff, floor, allowed)
    if differing is None:
        success = (
            f"identical ids: the step-by-step cached edit persists exactly as recompute re-applies it; logits differ "
            f"by {steered_diff:.3g} (unsteered model's own cached-vs-recompute difference {floor:.3g})"
        )
    else:
        success = (
            f"differs from step {differing}, as expected because cached and recomputed matmuls round differently: "
            f"logits differ by only {steered_diff:.3g} on identical inputs (allowed {allowed:.3g}), enough to swap "
            "two near-tied tokens"
        )
    return spec_verdict(ID, config, problems, success, evidence)
