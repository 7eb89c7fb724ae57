"""Spec finding ``coverage``: every arm touched exactly the (step, layer, position, row) the spec intends.

The intended touches come from the spec alone (:func:`equiv_core.findings.coverage_map.intended_touches`); each arm's
touches are recorded by its own code as it edits. A gap is reported in words and drawn as a step x position grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from equiv_core.arms.steering import Touch
from equiv_core.config.catalog import ArmName
from equiv_core.findings.coverage_map import CoverageCheck
from equiv_core.findings.finding import FindingResult
from equiv_core.findings.spec.spec_finding import (
    SpecEvidence,
    SpecFindingConfig,
    arms_evidence,
    ended_before_intent,
    row_label,
    rows_with_intent,
    spec_finding,
    spec_verdict,
    written_arm_missing,
)
from equiv_core.findings.spec.spec_run import SpecRun

ID = "coverage"


@dataclass(frozen=True, slots=True)
class CoverageEvidence(SpecEvidence):
    checks: dict[str, tuple[CoverageCheck, ...]]  # per arm, one per row
    new_tokens: int

    def _intended(self, cached: bool) -> list[list[int]]:
        touches: set[Touch] = set()
        for checks in self.checks.values():
            for check in checks:
                if check.cached == cached:
                    touches |= check.intended
        return [touch.to_list() for touch in sorted(touches)]

    def details(self) -> dict[str, Any]:
        return {
            "intended_with_kv_cache": self._intended(True),
            "intended_without_kv_cache": self._intended(False),
            "problems": {arm: [check.problems() for check in checks] for arm, checks in self.checks.items()},
            "grids": {arm: [self.grid(arm, check.row) for check in checks] for arm, checks in self.checks.items()},
        }

    def grid(self, arm: str, row: int = 0) -> list[str]:
        check = self.checks[arm][row]
        return check.grid(check.prompt_length, check.steps_run or self.new_tokens)

    def lines(self) -> list[str]:
        lines = []
        batch = len(self.prompts) > 1
        for name, arm in self.arms.items():
            if name in (ArmName.UNSTEERED, ArmName.UNSTEERED_RECOMPUTE):
                continue
            if not arm.expressible:
                lines.append(f"{name:<15} not expressible: {arm.not_expressible}")
                continue
            checks = self.checks[name]
            problems = [
                f"{'row ' + str(check.row) + ': ' if batch else ''}{problem}"
                for check in checks
                for problem in check.problems()
            ]
            verdict = "; ".join(problems) or f"exactly the {sum(len(c.intended) for c in checks)} intended edits"
            lines.append(f"{name:<15} {arm.description}: {verdict}")
        for name, checks in self.checks.items():
            for check in checks:
                if name == ArmName.ITER or not check.matches:
                    where = f", row {check.row}" if batch else ""
                    lines += ["", f"{name}: {self.arms[name].description}{where}"]
                    lines += self.grid(name, check.row)
        lines += [
            "",
            "# touched as intended, o intended but not touched, x touched but not intended, . computed and left "
            "alone, blank: not computed in that pass (KV cache)",
        ]
        return lines


@spec_finding(ID, "every arm touched exactly the steps, layers and positions the spec intends")
def coverage(run: SpecRun, config: SpecFindingConfig) -> FindingResult:
    checks = {name: arm.coverage for name, arm in run.arms.items() if arm.expressible}
    problems = [
        f"{name}: {row_label(run, check.row)}{problem}"
        for name, arm_checks in checks.items()
        for check in arm_checks
        for problem in check.problems()
    ]
    evidence = CoverageEvidence(arms_evidence(run), run.resolved.batch.prompts, checks, run.resolved.new_tokens)
    cached_edits = sum(len(check.intended) for check in checks[ArmName.HOOK])
    left_out = ended_before_intent(run)
    success = f"{', '.join(checks)} touched exactly the intended edits ({cached_edits} with the KV cache)" + (
        f"; {left_out}" if left_out else ""
    )
    applicable = "" if rows_with_intent(run) else left_out
    return spec_verdict(
        ID, config, problems, success, evidence, applicable=applicable, expressible=written_arm_missing(run)
    )
