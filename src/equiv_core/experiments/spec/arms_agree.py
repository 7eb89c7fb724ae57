"""Spec finding ``arms_agree``: every nnsight arm that touched what the spec intends gives the raw hook's result.

Cached arms (plain invoke, step selector) are compared with the cached hook; the recompute arm with the hook
without the cache. Each pair is the same computation, so token ids must be identical and logits are expected to be
bit-identical; a logits difference is accepted only up to the rounding the unsteered model itself shows between two
computation paths in the same run (its cached-vs-recompute difference), never from a fixed table. An arm whose
coverage has a gap is not expected to agree; the report says whether the gap changed its tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from equiv_core.comparison import TensorComparison, compare_tensors
from equiv_core.experiments.base import FindingResult, ids_text
from equiv_core.experiments.spec.base import (
    SpecEvidence,
    SpecFindingConfig,
    arms_evidence,
    noise_floor,
    non_finite_problems,
    spec_finding,
    spec_verdict,
    written_arm_missing,
)
from equiv_core.spec_run import NNSIGHT_ARMS, SpecRun

ID = "arms_agree"


@dataclass(frozen=True, slots=True)
class ArmAgreement:
    arm: str
    reference: str
    covers_intent: bool  # False: a coverage gap, so agreement is not expected
    ids_equal: bool
    logits: TensorComparison  # atol is the allowed difference: the measured noise floor

    def to_dict(self) -> dict[str, Any]:
        return {
            "arm": self.arm,
            "reference": self.reference,
            "covers_intent": self.covers_intent,
            "ids_equal": self.ids_equal,
            "logits": self.logits.to_dict(),
        }

    def line(self) -> str:
        same = "identical ids" if self.ids_equal else "DIFFERENT ids"
        gap = "" if self.covers_intent else " (coverage gap: not expected to agree)"
        return (
            f"{self.arm:<9} vs {self.reference:<15} {same}; logits bit-identical {self.logits.bit_identical}, "
            f"max abs diff {self.logits.max_abs_diff:.3g}{gap}"
        )


@dataclass(frozen=True, slots=True)
class ArmsAgreeEvidence(SpecEvidence):
    comparisons: tuple[ArmAgreement, ...]
    noise_floor: float

    def details(self) -> dict[str, Any]:
        return {
            "comparisons": [comparison.to_dict() for comparison in self.comparisons],
            "unsteered_noise_floor": self.noise_floor,
        }

    def lines(self) -> list[str]:
        generations = [
            f"{name:<20} {ids_text(arm.generation.generated_ids)} {arm.generation.text!r}"
            for name, arm in self.arms.items()
            if arm.generation is not None
        ]
        floor = (
            f"logits may differ by at most {self.noise_floor:.3g} (the unsteered model's own rounding between paths)"
        )
        return [comparison.line() for comparison in self.comparisons] + [floor] + generations


@spec_finding(ID, "every nnsight arm that touched what the spec intends gives the raw hook's token ids and logits")
def arms_agree(run: SpecRun, config: SpecFindingConfig) -> FindingResult:
    floor = noise_floor(run)
    comparisons, problems = [], non_finite_problems(run)
    for name in NNSIGHT_ARMS:
        arm = run.arms[name]
        if not arm.expressible:
            continue
        reference = "hook" if arm.cached else "hook_recompute"
        expected = run.arms[reference].record
        logits = compare_tensors(arm.record.step_logits, expected.step_logits, atol=floor, rtol=0.0)
        ids_equal = arm.record.generated_ids == expected.generated_ids
        comparisons.append(ArmAgreement(name, reference, arm.covers_intent, ids_equal, logits))
        if not arm.covers_intent:
            continue
        if not ids_equal:
            problems.append(
                f"{name}: ids {list(arm.record.generated_ids)} differ from {reference} {list(expected.generated_ids)}"
            )
        elif not logits.bit_identical and not (math.isfinite(floor) and logits.max_abs_diff <= floor):
            problems.append(
                f"{name}: logits differ from {reference} by {logits.max_abs_diff:.3g}, beyond the unsteered model's "
                f"own rounding between computation paths ({floor:.3g})"
            )
    compared = [c for c in comparisons if c.covers_intent]
    if not compared:
        problems.append("no nnsight arm touched what the spec intends, so none can be compared (see coverage)")
    evidence = ArmsAgreeEvidence(arms_evidence(run), tuple(comparisons), floor)
    verb = "gives" if len(compared) == 1 else "give"
    exact = [c.arm for c in compared if c.logits.bit_identical]
    success = f"{', '.join(c.arm for c in compared)} {verb} the raw hook's ids" + (
        f"; logits bit-identical: {', '.join(exact)}" if exact else ""
    )
    return spec_verdict(ID, config, problems, success, evidence, expressible=written_arm_missing(run))
