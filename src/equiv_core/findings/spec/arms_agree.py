"""Spec finding ``arms_agree``: every nnsight arm that touched what the spec intends gives the raw hook's result.

Cached arms (plain invoke, step selector in one batched invoke or one invoke per prompt) are compared with the
cached hook; the recompute arm with the hook without the cache. Each pair is the same computation on the same
inputs under deterministic kernels (the run configures them), where the model itself gives bit-identical logits
twice: so token ids must be identical in every row and logits bit-identical. An arm whose coverage has a gap is not
expected to agree; the report says whether the gap changed its tokens. Rows that ended at EOS before anything was
steered are left out (their tokens say nothing about steering).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from equiv_core.config.catalog import ArmName
from equiv_core.findings.comparison import TensorComparison, compare_tensors
from equiv_core.findings.finding import FindingResult, ids_text
from equiv_core.findings.spec.spec_finding import (
    SpecEvidence,
    SpecFindingConfig,
    arms_evidence,
    ended_before_intent,
    non_finite_problems,
    row_label,
    rows_with_intent,
    spec_finding,
    spec_verdict,
    written_arm_missing,
)
from equiv_core.findings.spec.spec_run import NNSIGHT_ARMS, SpecRun

ID = "arms_agree"


@dataclass(frozen=True, slots=True)
class ArmAgreement:
    arm: str
    reference: str
    row: int
    covers_intent: bool  # False: a coverage gap, so agreement is not expected
    ids_equal: bool
    logits: TensorComparison  # atol is the allowed difference: the measured noise floor

    def to_dict(self) -> dict[str, Any]:
        return {
            "arm": self.arm,
            "reference": self.reference,
            "row": self.row,
            "covers_intent": self.covers_intent,
            "ids_equal": self.ids_equal,
            "logits": self.logits.to_dict(),
        }

    def line(self, label: str) -> str:
        same = "identical ids" if self.ids_equal else "DIFFERENT ids"
        gap = "" if self.covers_intent else " (coverage gap: not expected to agree)"
        return (
            f"{label}{self.arm:<15} vs {self.reference:<15} {same}; logits bit-identical {self.logits.bit_identical}, "
            f"max abs diff {self.logits.max_abs_diff:.3g}{gap}"
        )


@dataclass(frozen=True, slots=True)
class ArmsAgreeEvidence(SpecEvidence):
    comparisons: tuple[ArmAgreement, ...]

    def details(self) -> dict[str, Any]:
        return {"comparisons": [comparison.to_dict() for comparison in self.comparisons]}

    def lines(self) -> list[str]:
        batch = len(self.prompts) > 1
        lines = [c.line(f"row {c.row}: " if batch else "") for c in self.comparisons]
        for name, arm in self.arms.items():
            for row, evidence in enumerate(arm.rows):
                label = f"row {row} " if batch else ""
                generation = evidence.generation
                lines.append(f"{label}{name:<20} {ids_text(generation.generated_ids)} {generation.text!r}")
        return lines


@spec_finding(ID, "every nnsight arm that touched what the spec intends gives the raw hook's token ids and logits")
def arms_agree(run: SpecRun, config: SpecFindingConfig) -> FindingResult:
    judged = rows_with_intent(run)
    comparisons, problems = [], non_finite_problems(run)
    for name in [name for name in NNSIGHT_ARMS if name in run.arms]:
        arm = run.arms[name]
        if not arm.expressible:
            continue
        reference = ArmName.HOOK if arm.cached else ArmName.HOOK_RECOMPUTE
        for row, (record, expected) in enumerate(zip(arm.rows, run.arms[reference].rows, strict=True)):
            if row not in judged:
                continue
            logits = compare_tensors(record.step_logits, expected.step_logits, atol=0.0, rtol=0.0)
            ids_equal = record.generated_ids == expected.generated_ids
            comparisons.append(ArmAgreement(name, reference, row, arm.covers_intent, ids_equal, logits))
            if not arm.covers_intent:
                continue
            where = f"{name}: {row_label(run, row)}"
            if not ids_equal:
                problems.append(
                    f"{where}ids {list(record.generated_ids)} differ from {reference} {list(expected.generated_ids)}"
                )
            elif not logits.bit_identical:
                problems.append(
                    f"{where}logits differ from {reference} by {logits.max_abs_diff:.3g}: the same computation under "
                    "deterministic kernels gives bit-identical logits"
                )
    compared = sorted({c.arm for c in comparisons if c.covers_intent}, key=NNSIGHT_ARMS.index)
    if judged and not compared:
        problems.append("no nnsight arm touched what the spec intends, so none can be compared (see coverage)")
    evidence = ArmsAgreeEvidence(arms_evidence(run), run.resolved.batch.prompts, tuple(comparisons))
    verb = "gives" if len(compared) == 1 else "give"
    exact = [arm for arm in compared if all(c.logits.bit_identical for c in comparisons if c.arm == arm)]
    success = f"{', '.join(compared)} {verb} the raw hook's ids" + (
        f"; logits bit-identical: {', '.join(exact)}" if exact else ""
    )
    return spec_verdict(
        ID,
        config,
        problems,
        success,
        evidence,
        applicable="" if judged else ended_before_intent(run),
        expressible=written_arm_missing(run),
    )
