"""Spec finding ``coverage``: every arm touched exactly the (step, layer, position, row) the spec intends.

The intended touches come from the spec alone (:func:`equiv_core.coverage.intended_touches`); each arm's
touches are recorded by its own code as it edits. A gap is reported in words and drawn as a step x position grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from equiv_core.coverage import CoverageCheck, Touch
from equiv_core.experiments.base import FindingResult
from equiv_core.experiments.spec.base import (
    SpecEvidence,
    SpecFindingConfig,
    arms_evidence,
    spec_finding,
    spec_verdict,
    written_arm_missing,
)
from equiv_core.spec_run import SpecRun

ID = "coverage"


@dataclass(frozen=True, slots=True)
class CoverageEvidence(SpecEvidence):
    checks: dict[str, CoverageCheck]
    prompt_length: int
    new_tokens: int

    def _intended(self, cached: bool) -> list[list[int]]:
        touches: set[Touch] = set()
        for check in self.checks.values():
            if check.cached == cached:
                touches |= check.intended
        return [touch.to_list() for touch in sorted(touches)]

    def details(self) -> dict[str, Any]:
        return {
            "intended_with_kv_cache": self._intended(True),
            "intended_without_kv_cache": self._intended(False),
            "problems": {arm: check.problems() for arm, check in self.checks.items()},
            "grids": {arm: self.grid(arm) for arm in self.checks},
        }

    def grid(self, arm: str) -> list[str]:
        return self.checks[arm].grid(self.prompt_length, self.new_tokens)

    def lines(self) -> list[str]:
        lines = []
        for name, arm in self.arms.items():
            if name.startswith("unsteered"):
                continue
            if not arm.expressible:
                lines.append(f"{name:<15} not expressible: {arm.not_expressible}")
                continue
            check = self.checks[name]
            verdict = "; ".join(check.problems()) or f"exactly the {len(check.intended)} intended edits"
            lines.append(f"{name:<15} {arm.description}: {verdict}")
        for name, check in self.checks.items():
            if name == "iter" or not check.matches:
                lines += ["", f"{name}: {self.arms[name].description}"]
                lines += self.grid(name)
        lines += [
            "",
            "# touched as intended, o intended but not touched, x touched but not intended, . computed and "
            "left alone, blank: not computed in that pass (KV cache)",
        ]
        return lines


@spec_finding(ID, "every arm touched exactly the steps, layers and positions the spec intends")
def coverage(run: SpecRun, config: SpecFindingConfig) -> FindingResult:
    checks = {name: arm.coverage for name, arm in run.arms.items() if arm.coverage is not None}
    problems = [f"{name}: {problem}" for name, check in checks.items() for problem in check.problems()]
    evidence = CoverageEvidence(arms_evidence(run), checks, run.resolved.prompt_length, run.resolved.new_tokens)
    cached_edits = len(checks["hook"].intended)
    success = f"{', '.join(checks)} touched exactly the intended edits ({cached_edits} with the KV cache)"
    return spec_verdict(ID, config, problems, success, evidence, expressible=written_arm_missing(run))
