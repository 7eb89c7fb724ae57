"""Spec finding ``cache_vs_recompute``: steering with the KV cache equals full recompute re-applying the edit.

With the cache each position is edited once, when first computed, and later steps read its edited keys and
values; without the cache every step recomputes every position and the edit must be re-applied at its absolute
position. Both raw-hook arms implement the spec's intent that way, so on identical inputs their logits may differ
by rounding only (different matmul shapes accumulate differently). The yardstick for "rounding only" is measured
in the same run, per row and over the same steps: the unsteered model's own cached-vs-recompute logits difference,
scaled by how much larger the steered logits are (rounding grows with magnitude; the ratio is capped), times
:data:`~equiv_core.findings.comparison.FLOOR_MARGIN`. The check needs power: when the edit itself moves the logits by no
more than that yardstick, cached and recompute cannot be told from no steering, and the finding is NOT APPLICABLE;
so it is with fewer than 2 steps generated (the cache is never read).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from equiv_core.config.catalog import ArmName
from equiv_core.findings.comparison import FLOOR_MARGIN
from equiv_core.findings.finding import FindingResult
from equiv_core.findings.spec.spec_finding import (
    SpecEvidence,
    SpecFindingConfig,
    arms_evidence,
    ended_before_intent,
    first_difference,
    non_finite_problems,
    row_allowance,
    row_label,
    rows_with_intent,
    same_input_diff,
    spec_finding,
    spec_verdict,
)
from equiv_core.findings.spec.spec_run import SpecRun

ID = "cache_vs_recompute"


@dataclass(frozen=True, slots=True)
class RowComparison:
    """One row: cached vs recompute on the steps whose inputs were identical, against that row's own yardstick."""

    row: int
    first_differing_step: int | None
    logits_max_abs_diff: float  # steered cached vs recompute
    noise_floor: float  # unsteered cached vs recompute
    allowed: float
    effect: float  # steered vs unsteered (cached)

    @property
    def within(self) -> bool:
        return self.logits_max_abs_diff <= self.allowed  # False for NaN

    def to_dict(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "first_differing_step": self.first_differing_step,
            "logits_max_abs_diff": self.logits_max_abs_diff,
            "unsteered_noise_floor": self.noise_floor,
            "allowed_logits_diff": self.allowed,
            "steering_effect": self.effect,
        }


@dataclass(frozen=True, slots=True)
class CacheVsRecomputeEvidence(SpecEvidence):
    rows_compared: tuple[RowComparison, ...]

    def details(self) -> dict[str, Any]:
        rows = self.rows_compared
        return {
            "ids_equal": all(row.first_differing_step is None for row in rows),
            "logits_max_abs_diff": max((row.logits_max_abs_diff for row in rows), default=0.0),
            "unsteered_noise_floor": max((row.noise_floor for row in rows), default=0.0),
            "floor_margin": FLOOR_MARGIN,
            "row_comparisons": [row.to_dict() for row in rows],
        }

    def lines(self) -> list[str]:
        lines = []
        batch = len(self.prompts) > 1
        for comparison in self.rows_compared:
            hook = self.arms[ArmName.HOOK].rows[comparison.row].generation
            recompute = self.arms[ArmName.HOOK_RECOMPUTE].rows[comparison.row].generation
            label = f"row {comparison.row} " if batch else ""
            lines += [
                f"{label}hook (KV cache)     {list(hook.generated_ids)} {hook.text!r}",
                f"{label}hook (recompute)    {list(recompute.generated_ids)} {recompute.text!r}",
                f"{label}logits max abs diff {comparison.logits_max_abs_diff:.3g} on identical inputs; allowed "
                f"{comparison.allowed:.3g} ({FLOOR_MARGIN:g}x the unsteered model's own cached-vs-recompute "
                f"difference {comparison.noise_floor:.3g}, scaled to the steered logits); the steering itself moves "
                f"logits by {comparison.effect:.3g}",
            ]
        return lines

    def metrics(self) -> dict[str, float]:
        details = self.details()
        return {
            "logits_max_abs_diff": details["logits_max_abs_diff"],
            "unsteered_noise_floor": details["unsteered_noise_floor"],
        }


def _compare_row(run: SpecRun, row: int) -> RowComparison:
    """Row ``row``'s floor, steered difference, effect and allowance, each over its own same-input steps."""
    cached, recomputed, unsteered = (
        run.arms[ArmName.HOOK].rows[row],
        run.arms[ArmName.HOOK_RECOMPUTE].rows[row],
        run.unsteered[row],
    )
    floor, allowed = row_allowance(run, row, cached, recomputed)
    return RowComparison(
        row,
        first_difference(cached, recomputed),
        same_input_diff(cached, recomputed),
        floor,
        allowed,
        same_input_diff(cached, unsteered),
    )


@spec_finding(ID, "steering with the KV cache equals full recompute re-applying the edit at absolute positions")
def cache_vs_recompute(run: SpecRun, config: SpecFindingConfig) -> FindingResult:
    judged = rows_with_intent(run)
    compared = tuple(_compare_row(run, row) for row in judged)
    problems = non_finite_problems(run)
    # Coverage says where the edits landed, not what they wrote: where both hooks touched exactly the intent, a
    # difference beyond the allowance is edits of different values, or steered rounding the allowance (measured on
    # the unsteered model) does not cover; this finding cannot tell those apart, and says so.
    placed = run.arms[ArmName.HOOK].covers_intent and run.arms[ArmName.HOOK_RECOMPUTE].covers_intent
    cause = (
        "both hooks touched exactly the intended positions, so the edits differ in value, or the steered "
        "computation rounds more than this allowance, measured on the unsteered model, admits"
        if placed
        else "the edit did not land on the same positions (see coverage)"
    )
    if not problems:
        problems += [
            f"{row_label(run, c.row)}cached and recomputed logits differ by {c.logits_max_abs_diff:.3g} on identical "
            f"inputs, beyond the allowed {c.allowed:.3g} ({FLOOR_MARGIN:g}x the unsteered model's own difference "
            f"{c.noise_floor:.3g}): {cause}"
            for c in compared
            if not c.within
        ]
    evidence = CacheVsRecomputeEvidence(arms_evidence(run), run.resolved.batch.prompts, compared)
    read_cache = [
        c.row
        for c in compared
        if min(
            len(run.arms[ArmName.HOOK].rows[c.row].generated_ids),
            len(run.arms[ArmName.HOOK_RECOMPUTE].rows[c.row].generated_ids),
        )
        >= 2
    ]
    not_applicable = ""
    if not judged:
        not_applicable = ended_before_intent(run)
    elif not read_cache:
        not_applicable = "needs at least 2 steps generated: with 1 the cache is never read"
    elif not problems and all(math.isfinite(c.effect) and c.effect <= c.allowed for c in compared):
        not_applicable = (
            f"the steering moves logits by only {max(c.effect for c in compared):.3g}, within the rounding allowed "
            f"between cached and recompute ({min(c.allowed for c in compared):.3g}): this check cannot tell them "
            "from no steering"
        )
    parted = [c for c in compared if c.first_differing_step is not None]
    largest = max((c.logits_max_abs_diff for c in compared), default=0.0)
    if not parted:
        success = (
            f"identical ids: the cached edit persists exactly as recompute re-applies it; logits differ by "
            f"{largest:.3g} on identical inputs, within each row's allowance"
        )
    else:
        where = ", ".join(f"{row_label(run, c.row)}step {c.first_differing_step}" for c in parted)
        success = (
            f"differs from {where}, as expected because cached and recomputed matmuls round differently: logits "
            f"differ by only {largest:.3g} on identical inputs (within each row's allowance), enough to swap two "
            "near-tied tokens"
        )
    return spec_verdict(ID, config, problems, success, evidence, applicable=not_applicable)
