"""User finding ``hooks_removed``: once the user's steering has returned, nothing of it is left: a plain generation
is bit-identical to the unsteered one made before it (ids and logits), and no hook or swapped module remains.
nnsight#607 reports one trace changing the results of another; a forgotten ``handle.remove()`` does the same."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from equiv_core.config.catalog import ArmName
from equiv_core.findings.comparison import identical_generations
from equiv_core.findings.finding import FindingResult, ids_text
from equiv_core.findings.spec.spec_finding import SpecEvidence
from equiv_core.findings.user.user_finding import (
    UserFindingConfig,
    generation_line,
    row_label,
    user_arms_evidence,
    user_finding,
    user_verdict,
)
from equiv_core.findings.user.user_run import Phase, UserRun

ID = "hooks_removed"


@dataclass(frozen=True, slots=True)
class HooksRemovedEvidence(SpecEvidence):
    left_behind: tuple[str, ...]
    identical: tuple[bool, ...]  # per row: ids and logits bit-identical to unsteered

    def details(self) -> dict[str, Any]:
        return {"left_behind": list(self.left_behind), "after_equals_unsteered": list(self.identical)}

    def lines(self) -> list[str]:
        batch = len(self.prompts) > 1
        lines = []
        for row, same in enumerate(self.identical):
            label = f"row {row} " if batch else ""
            for name in (ArmName.UNSTEERED, ArmName.UNSTEERED_AFTER):
                lines.append(generation_line(self, name, row, label, 15))
            lines.append(f"{label}after == before, ids and logits bit for bit: {same}")
        return lines + [f"left behind: {item}" for item in self.left_behind]


@user_finding(
    ID,
    "after the user's steering returned, nothing of it is left: generation is as unsteered, bit for bit",
    frozenset({Phase.UNSTEERED, Phase.AFTER}),
)
def hooks_removed(run: UserRun, config: UserFindingConfig) -> FindingResult:
    identical = tuple(
        identical_generations(after, before) for after, before in zip(run.after, run.unsteered, strict=True)
    )
    problems = list(run.left_behind)
    for row, same in enumerate(identical):
        if same:
            continue
        after, before = run.after[row].generated_ids, run.unsteered[row].generated_ids
        how = f"ids {ids_text(after)} instead of {ids_text(before)}" if after != before else "same ids, other logits"
        problems.append(
            f"{row_label(run, row)}a plain generation after the steering returned differs from the one before it "
            f"({how}): the steering is still active, or left state behind"
        )
    evidence = HooksRemovedEvidence(user_arms_evidence(run), run.batch.prompts, run.left_behind, identical)
    success = "no hook or module left behind; a plain generation after it is bit-identical to the one before"
    return user_verdict(ID, config, problems, success, evidence)
