"""Judging one cell: the findings of ``equiv check`` on the library's steering, read as a
:class:`~equiv_core.conformance.record.CellState`.

The findings are ``equiv check``'s (README, "Check your own steering"); this module only reads them:

- ``coverage`` FAIL (touched other cells than intended), ``steered_differs`` FAIL (changed nothing),
  ``hooks_removed`` FAIL with a later plain generation changed (left steering behind) or different token ids:
  SILENTLY_WRONG; hooks or modules left on the model that change no later output are recorded
  (``left_behind``), and do not decide the state;
- the same ids with logits beyond the noise floor: SUPPORTED_DEGRADED (with the measured difference);
- SUPPORTED only on positive evidence: all four findings made, with their evidence, and the others hold;
- a finding the harness could not make (it raised, or was not applicable), or an intent that changes nothing even
  in the reference: NO_REFERENCE, never the library's fault.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from equiv_core.config.catalog import ArmName
from equiv_core.conformance.record import CellState, FirstDifference
from equiv_core.findings.finding import FindingResult
from equiv_core.findings.runner import RunReport
from equiv_core.findings.spec.spec_finding import SpecEvidence
from equiv_core.findings.user.coverage import UserCoverageEvidence
from equiv_core.findings.user.hooks_removed import HooksRemovedEvidence
from equiv_core.findings.user.matches_reference import MatchesReferenceEvidence
from equiv_core.findings.user.steered_differs import UserDiffersEvidence
from equiv_core.findings.verdict import Verdict


@dataclass(frozen=True, slots=True)
class Judgement:
    """A cell's state and the evidence the record keeps (see :class:`~equiv_core.conformance.record.CellRecord`)."""

    state: CellState
    reason: str
    touched_as_intended: bool | None
    ids_equal: bool | None
    logits_bit_identical: bool | None
    logits_max_abs_diff: float | None
    noise_floor: float | None
    first_difference: FirstDifference | None
    library_ids: tuple[int, ...]
    reference_ids: tuple[int, ...]
    grid: tuple[str, ...]
    findings: dict[str, Verdict]
    left_behind: tuple[str, ...]
    left_behind_total: int


LEFT_BEHIND_KEPT = 10  # items of what a library left on the model kept in a cell (nnsight 0.6.3 leaves hundreds)


def _finding(report: RunReport, finding_id: str) -> FindingResult | None:
    return next((finding for finding in report.findings if finding.id == finding_id), None)


def first_difference(
    mine: tuple[int, ...], reference: tuple[int, ...], decode: Callable[[int], str]
) -> FirstDifference | None:
    """Where two generations' ids first part (None: they do not), with each token's text from ``decode``."""
    for step, (left, right) in enumerate(zip(mine, reference, strict=False)):
        if left != right:
            return FirstDifference(step, left, right, decode(left), decode(right))
    return None


def _problem(finding: FindingResult | None, finding_id: str, evidence: type) -> str | None:
    """Why ``finding`` cannot be read as evidence about the library (None: it can): not run, NOT APPLICABLE / NOT
    EXPRESSIBLE, or a FAIL without its evidence (the harness raised while making it: ``NoEvidence``)."""
    if finding is None:
        return f"{finding_id}: not run"
    if finding.verdict not in (Verdict.PASS, Verdict.FAIL):
        return f"{finding_id}: {finding.verdict}: {finding.message}"
    if not isinstance(finding.evidence, evidence):
        return f"{finding_id}: the harness failed: {finding.message}"
    return None


def judge(report: RunReport, decode: Callable[[int], str]) -> Judgement:
    """The state of a cell from its check's ``report`` (one prompt: row 0). ``decode``: token id -> text, for the
    first differing token. SUPPORTED only on positive evidence: the four findings ran, each with its evidence, and
    ``coverage``, ``steered_differs`` and ``matches_reference`` hold; a finding the harness could not make, or an
    intent that changes nothing even in the reference, is NO_REFERENCE, never the library's fault."""
    coverage, matches = _finding(report, "coverage"), _finding(report, "matches_reference")
    differs, removed = _finding(report, "steered_differs"), _finding(report, "hooks_removed")
    unjudged = [
        problem
        for finding, finding_id, evidence in (
            (coverage, "coverage", UserCoverageEvidence),
            (matches, "matches_reference", MatchesReferenceEvidence),
            (differs, "steered_differs", UserDiffersEvidence),
            (removed, "hooks_removed", HooksRemovedEvidence),
        )
        if (problem := _problem(finding, finding_id, evidence)) is not None
    ]
    findings = {finding.id: finding.verdict for finding in report.findings}
    if unjudged:
        return _unjudged("the harness could not judge it: " + "; ".join(unjudged), findings)
    assert coverage is not None and matches is not None and differs is not None and removed is not None
    assert isinstance(coverage.evidence, UserCoverageEvidence) and isinstance(removed.evidence, HooksRemovedEvidence)
    assert isinstance(matches.evidence, MatchesReferenceEvidence) and isinstance(differs.evidence, UserDiffersEvidence)
    if not all(differs.evidence.reference_changed):
        return _unjudged(
            "the intent does not change the output even in the raw-hook reference: nothing to tell "
            "steering from no steering with (a larger scale, another layer or more tokens)",
            findings,
        )
    evidence: SpecEvidence = matches.evidence
    mine = evidence.arms[ArmName.USER].rows[0].generation.generated_ids
    reference = evidence.arms[ArmName.HOOK].rows[0].generation.generated_ids
    match = matches.evidence.matches[0]
    wrong = [f"{f.id}: {f.message}" for f in (coverage, differs) if f.verdict is Verdict.FAIL]
    if not match.ids_equal:
        wrong.append(f"{matches.id}: {matches.message}")
    if removed.verdict is Verdict.FAIL and not all(removed.evidence.identical):  # a later plain generation changed
        wrong.append(f"{removed.id}: {removed.message}")
    if wrong:
        state, reason = CellState.SILENTLY_WRONG, "; ".join(wrong)
    elif matches.verdict is Verdict.FAIL:  # the same ids and cells, logits beyond the noise floor
        state, reason = CellState.SUPPORTED_DEGRADED, matches.message
    else:
        state, reason = CellState.SUPPORTED, matches.message
    # what is left on the model is listed apart only where it changes no later output (else it is in the reason)
    changes_later = not all(removed.evidence.identical)
    left_behind = () if changes_later else removed.evidence.left_behind
    return Judgement(
        state=state,
        reason=reason,
        touched_as_intended=coverage.verdict is Verdict.PASS,
        ids_equal=match.ids_equal,
        logits_bit_identical=match.bit_identical,
        logits_max_abs_diff=match.max_abs_diff,
        noise_floor=match.allowance,
        first_difference=first_difference(tuple(mine), tuple(reference), decode),
        library_ids=tuple(mine),
        reference_ids=tuple(reference),
        grid=tuple(coverage.evidence.grid(ArmName.USER, 0)),
        findings=findings,
        left_behind=left_behind[:LEFT_BEHIND_KEPT],
        left_behind_total=len(left_behind),
    )


def _unjudged(reason: str, findings: dict[str, Verdict]) -> Judgement:
    return Judgement(
        state=CellState.NO_REFERENCE,
        reason=reason,
        touched_as_intended=None,
        ids_equal=None,
        logits_bit_identical=None,
        logits_max_abs_diff=None,
        noise_floor=None,
        first_difference=None,
        library_ids=(),
        reference_ids=(),
        grid=(),
        findings=findings,
        left_behind=(),
        left_behind_total=0,
    )
