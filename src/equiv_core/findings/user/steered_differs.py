"""User finding ``steered_differs``: the user's steering changes the output (its tokens, or its logits beyond the
model's own rounding), or, for an intent that changes nothing (scale 0), gives exactly the unsteered output.
Steering that silently did nothing is a failure here, never "equivalent"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from equiv_core.config.catalog import ArmName
from equiv_core.findings.comparison import identical_generations
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

ID = "steered_differs"


@dataclass(frozen=True, slots=True)
class UserDiffersEvidence(SpecEvidence):
    identity: bool
    changed: tuple[bool, ...]  # per row: the user's output differs from unsteered
    reference_changed: tuple[bool, ...]  # per row: the reference's does

    def details(self) -> dict[str, Any]:
        return {
            "identity_spec": self.identity,
            "changed": list(self.changed),
            "reference_changed": list(self.reference_changed),
        }

    def lines(self) -> list[str]:
        batch = len(self.prompts) > 1
        lines = []
        for row, changed in enumerate(self.changed):
            label = f"row {row} " if batch else ""
            for name in (ArmName.UNSTEERED, ArmName.USER):
                lines.append(generation_line(self, name, row, label, 9))
            lines.append(f"{label}user output {'differs from' if changed else 'EQUALS'} unsteered")
        return lines


def _changed(run: UserRun, row: int, which: str) -> bool:
    assert run.reference is not None, "steered_differs needs the reference generation"
    mine = run.user[row] if which == ArmName.USER else run.reference.rows[row]
    unsteered = run.unsteered[row]
    if mine.generated_ids != unsteered.generated_ids:
        return True
    if identical_generations(mine, unsteered):
        return False
    _floor, allowance = noise_allowance(run, row, mine, unsteered)
    return not same_input_diff(mine, unsteered) <= allowance


@user_finding(
    ID,
    "the user's steering changes the output (an intent that changes nothing leaves it exactly as it was)",
    frozenset({Phase.UNSTEERED, Phase.REFERENCE}),
)
def steered_differs(run: UserRun, config: UserFindingConfig) -> FindingResult:
    identity = run.resolved.spec.is_identity
    rows = range(run.batch.size)
    changed = tuple(_changed(run, row, ArmName.USER) for row in rows)
    reference_changed = tuple(_changed(run, row, ArmName.HOOK) for row in rows)
    problems = untrusted_reference(run)
    # unsteered the way the user's code ran: with the KV cache, or without it (the floor run)
    baseline = run.unsteered if run.cached else run.unsteered_recompute
    if identity and baseline is None:
        problems.append(
            "the unsteered run without the KV cache, to compare an intent that changes nothing with, was not made"
        )
    for row in rows:
        where = row_label(run, row)
        if identity and baseline is not None:
            if not identical_generations(run.user[row], baseline[row]):
                problems.append(f"{where}an intent that changes nothing must give exactly the unsteered output")
        elif not identity and not reference_changed[row]:
            problems.append(
                f"{where}the intent does not change the output even in the raw-hook reference, so no comparison can "
                "tell steering from no steering (choose a larger scale, another layer or more new tokens)"
            )
        elif not identity and not changed[row]:
            problems.append(f"{where}steering not applied (ids equal the unsteered ids, logits within rounding)")
    evidence = UserDiffersEvidence(user_arms_evidence(run), run.batch.prompts, identity, changed, reference_changed)
    success = (
        "the intent changes nothing and the user's steering gives exactly the unsteered output"
        if identity
        else "the user's steering changes the output"
    )
    return user_verdict(ID, config, problems, success, evidence)
