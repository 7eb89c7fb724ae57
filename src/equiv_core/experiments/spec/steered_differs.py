"""Spec finding ``steered_differs``: every steered arm changes the output, or, for a spec that leaves every
hidden state unchanged (scale 0), gives exactly the unsteered output (ids and logits bit for bit)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from equiv_core.comparison import tensor_sha256
from equiv_core.experiments.base import FindingResult
from equiv_core.experiments.spec.base import (
    SpecEvidence,
    SpecFindingConfig,
    arms_evidence,
    non_finite_problems,
    spec_finding,
    spec_verdict,
)
from equiv_core.spec_run import SpecRun

ID = "steered_differs"


@dataclass(frozen=True, slots=True)
class SteeredDiffersEvidence(SpecEvidence):
    identity: bool  # the spec changes nothing (e.g. scale 0): every arm must equal unsteered
    equal_to_unsteered: dict[str, bool]

    def details(self) -> dict[str, Any]:
        return {"identity_spec": self.identity, "equal_to_unsteered": self.equal_to_unsteered}

    def lines(self) -> list[str]:
        unsteered = self.arms["unsteered"].generation
        assert unsteered is not None
        lines = [f"unsteered       {list(unsteered.generated_ids)} {unsteered.text!r}"]
        for name, equal in self.equal_to_unsteered.items():
            generation = self.arms[name].generation
            assert generation is not None
            lines.append(f"{name:<15} {list(generation.generated_ids)} {'= unsteered' if equal else 'differs'}")
        return lines


@spec_finding(ID, "every steered arm changes the output (a spec that changes nothing leaves it exactly as it was)")
def steered_differs(run: SpecRun, config: SpecFindingConfig) -> FindingResult:
    identity = run.resolved.spec.is_identity
    equal: dict[str, bool] = {}
    problems = non_finite_problems(run)
    for name, arm in run.arms.items():
        if not arm.expressible:
            continue
        baseline = run.unsteered if arm.cached else run.unsteered_recompute
        equal[name] = arm.record.generated_ids == baseline.generated_ids
        if identity:
            bit_identical = tensor_sha256(arm.record.step_logits) == tensor_sha256(baseline.step_logits)
            if not equal[name] or not bit_identical:
                problems.append(
                    f"{name}: a spec that changes nothing ({run.resolved.spec.describe()}) must give exactly the "
                    f"unsteered output, but ids equal: {equal[name]}, logits bit-identical: {bit_identical}"
                )
    if not identity:
        if equal.get("hook", False):
            problems.append(
                "the edit does not change the output even in the raw-hook reference, so no comparison here can tell "
                "steering from no steering (choose a larger scale, another layer or more new tokens)"
            )
        else:
            problems += [
                f"{name}: steering not applied (ids equal the unsteered ids)" for name, same in equal.items() if same
            ]
    evidence = SteeredDiffersEvidence(arms_evidence(run), identity, equal)
    success = (
        "the spec changes nothing and every arm gives exactly the unsteered output (ids and logits bit for bit)"
        if identity
        else f"every steered arm ({', '.join(equal)}) changes the output"
    )
    return spec_verdict(ID, config, problems, success, evidence)
