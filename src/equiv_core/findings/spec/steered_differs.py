"""Spec finding ``steered_differs``: every steered arm changes the output, or, for a spec that leaves every
hidden state unchanged (scale 0), gives exactly the unsteered output (ids and logits bit for bit).

"Changes the output" means different token ids, or, where the ids happen to agree (a sampled draw can land on the
same tokens, a greedy argmax can hold), logits that differ from unsteered by more than rounding on identical
inputs (:func:`equiv_core.findings.comparison.rounding_allowance` of the unsteered model's own cached-vs-recompute
difference). An arm whose edit did nothing has logits bit-identical to unsteered, and fails either way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from equiv_core.findings.comparison import tensor_sha256
from equiv_core.findings.finding import FindingResult
from equiv_core.findings.spec.spec_finding import (
    SpecEvidence,
    SpecFindingConfig,
    arms_evidence,
    ended_before_intent,
    non_finite_problems,
    row_allowance,
    row_label,
    rows_with_intent,
    same_input_diff,
    spec_finding,
    spec_verdict,
)
from equiv_core.findings.spec.spec_run import SpecRun

ID = "steered_differs"


@dataclass(frozen=True, slots=True)
class SteeredDiffersEvidence(SpecEvidence):
    identity: bool  # the spec changes nothing (e.g. scale 0): every arm must equal unsteered
    equal_to_unsteered: dict[str, tuple[bool, ...]]  # per arm, per row: same token ids
    changed: dict[str, tuple[bool, ...]]  # per arm, per row: different ids, or logits beyond rounding
    allowance: float  # the largest per-row logits allowance used

    def details(self) -> dict[str, Any]:
        single = len(self.prompts) == 1
        return {
            "identity_spec": self.identity,
            "equal_to_unsteered": {
                arm: rows[0] if single else list(rows) for arm, rows in self.equal_to_unsteered.items()
            },
            "changed": {arm: rows[0] if single else list(rows) for arm, rows in self.changed.items()},
            "logits_allowance": self.allowance,
        }

    def lines(self) -> list[str]:
        lines = []
        for row, unsteered in enumerate(self.arms["unsteered"].rows):
            label = f"row {row} " if len(self.prompts) > 1 else ""
            lines.append(
                f"{label}unsteered       {list(unsteered.generation.generated_ids)} {unsteered.generation.text!r}"
            )
            for name, equal in self.equal_to_unsteered.items():
                generation = self.arms[name].rows[row].generation
                if equal[row] and self.changed[name][row]:
                    lines.append(f"{label}{name:<15} {list(generation.generated_ids)} = unsteered ids, logits differ")
                    continue
                lines.append(
                    f"{label}{name:<15} {list(generation.generated_ids)} {'= unsteered' if equal[row] else 'differs'}"
                )
        return lines


@spec_finding(
    ID,
    "every steered arm changes the output: its tokens, or its logits beyond rounding (a spec that changes nothing "
    "leaves it exactly as it was)",
)
def steered_differs(run: SpecRun, config: SpecFindingConfig) -> FindingResult:
    identity = run.resolved.spec.is_identity
    judged = rows_with_intent(run)
    equal: dict[str, tuple[bool, ...]] = {}
    changed: dict[str, tuple[bool, ...]] = {}
    allowances: list[float] = []
    problems = non_finite_problems(run)
    for name, arm in run.arms.items():
        if not arm.expressible:
            continue
        baselines = run.unsteered if arm.cached else run.unsteered_recompute
        pairs = list(zip(arm.rows, baselines, strict=True))
        equal[name] = tuple(record.generated_ids == baseline.generated_ids for record, baseline in pairs)
        moved = []
        for row, (record, baseline) in enumerate(pairs):
            _floor, allowance = row_allowance(run, row, record, baseline)
            allowances.append(allowance)
            moved.append(not equal[name][row] or not same_input_diff(record, baseline) <= allowance)
        changed[name] = tuple(moved)
        if identity:
            for row, (record, baseline) in enumerate(pairs):
                bit_identical = tensor_sha256(record.step_logits) == tensor_sha256(baseline.step_logits)
                if not equal[name][row] or not bit_identical:
                    problems.append(
                        f"{name}: {row_label(run, row)}a spec that changes nothing ({run.resolved.spec.describe()}) "
                        f"must give exactly the unsteered output, but ids equal: {equal[name][row]}, logits "
                        f"bit-identical: {bit_identical}"
                    )
    if not identity:
        invisible = [row for row, moved in enumerate(changed.get("hook", ())) if not moved and row in judged]
        for row in invisible:
            problems.append(
                f"{row_label(run, row)}the edit does not change the output even in the raw-hook reference, so no "
                "comparison here can tell steering from no steering (choose a larger scale, another layer or more "
                "new tokens)"
            )
        problems += [
            f"{name}: {row_label(run, row)}steering not applied (ids equal the unsteered ids, logits within rounding)"
            for name, rows in changed.items()
            for row, moved in enumerate(rows)
            if not moved and row in judged and row not in invisible
        ]
    evidence = SteeredDiffersEvidence(
        arms_evidence(run), run.resolved.batch.prompts, identity, equal, changed, max(allowances, default=0.0)
    )
    left_out = ended_before_intent(run)
    success = (
        "the spec changes nothing and every arm gives exactly the unsteered output (ids and logits bit for bit)"
        if identity
        else f"every steered arm ({', '.join(equal)}) changes the output"
    ) + (f"; {left_out}" if left_out else "")
    applicable = "" if identity or judged else left_out
    return spec_verdict(ID, config, problems, success, evidence, applicable=applicable)
