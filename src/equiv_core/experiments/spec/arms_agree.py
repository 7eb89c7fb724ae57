"""Spec finding ``arms_agree``: every nnsight arm that touched what the spec intends gives the raw hook's ids.

Cached arms (plain invoke, step selector) are compared with the cached hook; the recompute arm with the hook
without the cache: the same computation, so token ids must be identical and logits are compared bit for bit and
within the dtype's tolerance. An arm whose coverage has a gap is not expected to agree; the report says whether
the gap changed its tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from equiv_core.comparison import LOGITS_TOLERANCE, TensorComparison, compare_tensors
from equiv_core.experiments.base import FindingResult, ids_text
from equiv_core.experiments.spec.base import SpecEvidence, SpecFindingConfig, arms_evidence, spec_finding, spec_verdict
from equiv_core.spec_run import NNSIGHT_ARMS, SpecRun

ID = "arms_agree"


@dataclass(frozen=True, slots=True)
class ArmAgreement:
    arm: str
    reference: str
    covers_intent: bool  # False: a coverage gap, so agreement is not expected
    ids_equal: bool
    logits: TensorComparison

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

    def details(self) -> dict[str, Any]:
        return {"comparisons": [comparison.to_dict() for comparison in self.comparisons]}

    def lines(self) -> list[str]:
        hooks = [
            f"{name:<20} {ids_text(arm.generation.generated_ids)} {arm.generation.text!r}"
            for name, arm in self.arms.items()
            if arm.generation is not None
        ]
        return [comparison.line() for comparison in self.comparisons] + hooks


@spec_finding(ID, "every nnsight arm that touched what the spec intends gives the raw hook's token ids")
def arms_agree(run: SpecRun, config: SpecFindingConfig) -> FindingResult:
    atol, rtol = LOGITS_TOLERANCE[run.dtype]
    comparisons, problems = [], []
    for name in NNSIGHT_ARMS:
        arm = run.arms[name]
        if not arm.expressible:
            continue
        reference = "hook" if arm.cached else "hook_recompute"
        expected = run.arms[reference].record
        logits = compare_tensors(arm.record.step_logits, expected.step_logits, atol, rtol)
        ids_equal = arm.record.generated_ids == expected.generated_ids
        comparisons.append(ArmAgreement(name, reference, arm.covers_intent, ids_equal, logits))
        if not arm.covers_intent:
            continue
        if not ids_equal:
            problems.append(
                f"{name}: ids {list(arm.record.generated_ids)} differ from {reference} {list(expected.generated_ids)}"
            )
        elif not logits.within_tolerance:
            problems.append(f"{name}: logits differ from {reference} by {logits.max_abs_diff:.3g} (atol={atol})")
    compared = [c.arm for c in comparisons if c.covers_intent]
    if not compared:
        problems.append("no nnsight arm touched what the spec intends, so none can be compared (see coverage)")
    evidence = ArmsAgreeEvidence(arms_evidence(run), tuple(comparisons))
    verb = "gives" if len(compared) == 1 else "give"
    success = f"{', '.join(compared)} {verb} the raw hook's ids" + "".join(
        f"; {c.arm} logits bit-identical to {c.reference}"
        for c in comparisons
        if c.covers_intent and c.logits.bit_identical
    )
    return spec_verdict(ID, config, problems, success, evidence)
