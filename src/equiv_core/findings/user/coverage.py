"""User finding ``coverage``: what the user's code was *observed* to touch equals what the intent steers.

The touches are the observer's (:mod:`equiv_core.observe.observer`): every (step, layer, position, row) where a
block's output differs from what the block computes from the input it received. The intended touches come from the
spec alone (:func:`equiv_core.findings.coverage_map.intended_touches`), with or without the KV cache as the user's
passes ran. A change at a pad column (no token there) is a problem of the row's check.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from equiv_core.config.catalog import ArmName
from equiv_core.findings.coverage_map import CoverageCheck, ranges
from equiv_core.findings.finding import FindingResult
from equiv_core.findings.spec.coverage import CoverageEvidence
from equiv_core.findings.user.user_finding import (
    UserFindingConfig,
    row_label,
    user_arms_evidence,
    user_finding,
    user_verdict,
)
from equiv_core.findings.user.user_run import UserRun

ID = "coverage"
LEGEND = (
    "# touched as intended, o intended but not touched, x touched but not intended, . computed and left alone, "
    "blank: not computed in that pass (KV cache)"
)


@dataclass(frozen=True, slots=True)
class UserCoverageEvidence(CoverageEvidence):
    """Spec mode's coverage evidence (``checks``: ``user``, observed, and ``hook``, the reference's own record),
    with what the observer saw besides."""

    receiver: str  # where the last block's output was read
    largest_change: float

    def details(self) -> dict[str, Any]:
        observed = {
            "last_block_output_read_at": self.receiver,
            "largest_change": self.largest_change,
            "pad_changes": [pad.to_list() for check in self.checks[ArmName.USER] for pad in check.pads],
        }
        return {**CoverageEvidence.details(self), "observed": observed}

    def lines(self) -> list[str]:
        batch = len(self.prompts) > 1
        lines = []
        for check in self.checks[ArmName.USER]:
            where = f", row {check.row}" if batch else ""
            lines += [f"{ArmName.USER}: observed{where} (layers {ranges({t.layer for t in check.touched}) or 'none'})"]
            lines += self.grid(ArmName.USER, check.row)
        lines += ["", LEGEND]
        return lines


@user_finding(
    ID,
    "the user's steering touched exactly the steps, layers and positions the intent steers (observed)",
    needs=frozenset(),
)
def coverage(run: UserRun, config: UserFindingConfig) -> FindingResult:
    problems = [f"{row_label(run, check.row)}{problem}" for check in run.coverage for problem in check.problems()]
    checks: dict[str, tuple[CoverageCheck, ...]] = {ArmName.USER: run.coverage}
    if run.reference is not None:  # the reference's own record of its edits, for the plot and the JSON
        touched = run.reference.touched
        checks[ArmName.HOOK] = tuple(
            replace(
                check,
                arm=ArmName.HOOK,
                touched=frozenset(t for t in touched if t.row == check.row and t.step < check.steps_run),
                passes=(),
                pads=(),
                unobservable=frozenset(),
            )
            for check in run.coverage
        )
    evidence = UserCoverageEvidence(
        user_arms_evidence(run),
        run.batch.prompts,
        checks,
        run.resolved.new_tokens,
        run.observation.receiver,
        run.observation.largest,
    )
    intended = sum(len(check.intended) for check in run.coverage)
    success = f"touched exactly the {intended} intended edits ({'with' if run.cached else 'without'} the KV cache)"
    touched_any = any(check.touched or check.pads for check in run.coverage)
    applicable = (
        "" if intended or touched_any else "nothing to steer in the steps generated (every row ended before its intent)"
    )
    return user_verdict(ID, config, problems, success, evidence, applicable=applicable)
