"""User finding ``matches_reference``: the user's steering gives the raw-hook reference of the intent: the same
token ids in every row, and logits bit-identical or, where not, within the model's own rounding noise measured in
this run (unsteered with vs without the KV cache, :func:`equiv_core.findings.comparison.rounding_allowance`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from equiv_core.config.catalog import ArmName
from equiv_core.findings.comparison import compare_tensors
from equiv_core.findings.finding import FindingResult
from equiv_core.findings.spec.spec_finding import SpecEvidence, same_input_diff
from equiv_core.findings.user.user_finding import (
    UserFindingConfig,
    generation_line,
    noise_allowance,
    row_label,
    untrusted_reference,
    user_arms_evidence,
    user_finding,
    user_verdict,
)
from equiv_core.findings.user.user_run import Phase, UserRun

ID = "matches_reference"


@dataclass(frozen=True, slots=True)
class RowMatch:
    row: int
    ids_equal: bool
    bit_identical: bool
    max_abs_diff: float  # over the steps whose inputs were identical
    allowance: float  # the noise floor, scaled (0: not measured, bit-identity was required)

    def to_dict(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "ids_equal": self.ids_equal,
            "logits_bit_identical": self.bit_identical,
            "logits_max_abs_diff": self.max_abs_diff,
            "logits_allowance": self.allowance,
        }


@dataclass(frozen=True, slots=True)
class MatchesReferenceEvidence(SpecEvidence):
    matches: tuple[RowMatch, ...]

    def details(self) -> dict[str, Any]:
        return {"comparisons": [match.to_dict() for match in self.matches]}

    def lines(self) -> list[str]:
        batch = len(self.prompts) > 1
        lines = []
        for match in self.matches:
            label = f"row {match.row} " if batch else ""
            for name in (ArmName.USER, ArmName.HOOK):
                lines.append(generation_line(self, name, match.row, label, 6))
            lines.append(
                f"{label}ids {'identical' if match.ids_equal else 'DIFFERENT'}; logits bit-identical "
                f"{match.bit_identical}, max abs diff {match.max_abs_diff:.3g}"
                + (f" (allowed {match.allowance:.3g})" if match.allowance else "")
            )
        return lines


@user_finding(
    ID,
    "the user's steering gives the raw-hook reference of the intent: token ids, and logits",
    frozenset({Phase.REFERENCE}),
)
def matches_reference(run: UserRun, config: UserFindingConfig) -> FindingResult:
    assert run.reference is not None, "matches_reference needs the reference generation"
    matches, problems = [], untrusted_reference(run)
    for row, (mine, expected) in enumerate(zip(run.user, run.reference.rows, strict=True)):
        ids_equal = mine.generated_ids == expected.generated_ids
        exact = compare_tensors(mine.step_logits, expected.step_logits, 0.0, 0.0).bit_identical
        difference = same_input_diff(mine, expected)
        _floor, allowance = (0.0, 0.0) if exact or not ids_equal else noise_allowance(run, row, mine, expected)
        matches.append(RowMatch(row, ids_equal, exact, difference, allowance))
        where = row_label(run, row)
        if not ids_equal:
            problems.append(
                f"{where}ids {list(mine.generated_ids)} differ from the reference {list(expected.generated_ids)}"
            )
        elif not exact and not difference <= allowance:
            problems.append(
                f"{where}same ids, but logits differ from the reference by {difference:.3g}, beyond the model's own "
                f"rounding ({allowance:.3g}): the steering is not the intent's (another vector, scale or position?)"
            )
    evidence = MatchesReferenceEvidence(user_arms_evidence(run), run.batch.prompts, tuple(matches))
    how = (
        "logits bit-identical"
        if all(match.bit_identical for match in matches)
        else f"logits within the model's own rounding (largest difference {max(m.max_abs_diff for m in matches):.3g})"
    )
    return user_verdict(ID, config, problems, f"the reference's token ids in every row; {how}", evidence)
