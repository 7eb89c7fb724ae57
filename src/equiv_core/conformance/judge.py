"""Judging one cell: the findings of ``equiv check`` on the library's steering, read as a
:class:`~equiv_core.conformance.record.CellState`.

The findings are ``equiv check``'s (README, "Check your own steering"); this module only reads them:

- ``coverage`` FAIL (touched other cells than intended), ``steered_differs`` FAIL (changed nothing),
  ``hooks_removed`` FAIL with a later plain generation changed (left steering behind) or different token ids:
  SILENTLY_WRONG; hooks or modules left on the model that change no later output are recorded
  (``left_behind``), and do not decide the state;
- the same ids with logits beyond the noise floor: SUPPORTED_DEGRADED (with the measured difference);
- otherwise (every finding that ran holds): SUPPORTED.
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
    findings: dict[str, str]
    left_behind: tuple[str, ...]


LEFT_BEHIND_KEPT = 10  # items of what a library left on the model kept in a cell; the rest counted


def _kept(items: tuple[str, ...]) -> tuple[str, ...]:
    """The first :data:`LEFT_BEHIND_KEPT` items, and how many more there were (nnsight 0.6.3 leaves a hook pair on
    every module: hundreds on a real model)."""
    if len(items) <= LEFT_BEHIND_KEPT:
        return items
    return (*items[:LEFT_BEHIND_KEPT], f"and {len(items) - LEFT_BEHIND_KEPT} more")


def _finding(report: RunReport, finding_id: str) -> FindingResult | None:
    return next((finding for finding in report.findings if finding.id == finding_id), None)


def _failed(finding: FindingResult | None) -> bool:
    return finding is not None and finding.verdict is Verdict.FAIL


def first_difference(
    mine: tuple[int, ...], reference: tuple[int, ...], decode: Callable[[int], str]
) -> FirstDifference | None:
    """Where two generations' ids first part (None: they do not), with each token's text from ``decode``."""
    for step, (left, right) in enumerate(zip(mine, reference, strict=False)):
        if left != right:
            return FirstDifference(step, left, right, decode(left), decode(right))
    return None


def judge(report: RunReport, decode: Callable[[int], str]) -> Judgement:
    """The state of a cell from its check's ``report`` (one prompt: row 0). ``decode``: token id -> text, for the
    first differing token."""
    coverage, matches = _finding(report, "coverage"), _finding(report, "matches_reference")
    differs, removed = _finding(report, "steered_differs"), _finding(report, "hooks_removed")
    grid: tuple[str, ...] = ()
    if coverage is not None and isinstance(coverage.evidence, UserCoverageEvidence):
        grid = tuple(coverage.evidence.grid(ArmName.USER, 0))
    mine: tuple[int, ...] = ()
    reference: tuple[int, ...] = ()
    match = None
    if matches is not None and isinstance(matches.evidence, MatchesReferenceEvidence):
        evidence: SpecEvidence = matches.evidence
        mine = evidence.arms[ArmName.USER].rows[0].generation.generated_ids
        reference = evidence.arms[ArmName.HOOK].rows[0].generation.generated_ids
        match = matches.evidence.matches[0]
    left_behind: tuple[str, ...] = ()
    changes_later = False
    if removed is not None and isinstance(removed.evidence, HooksRemovedEvidence):
        left_behind = _kept(removed.evidence.left_behind)
        changes_later = not all(removed.evidence.identical)
    wrong = [f"{f.id}: {f.message}" for f in (coverage, differs) if f is not None and f.verdict is Verdict.FAIL]
    if changes_later and removed is not None:
        wrong.append(f"{removed.id}: {removed.message}")
    ids_equal = None if match is None else match.ids_equal
    if ids_equal is False and matches is not None:
        wrong.append(f"{matches.id}: {matches.message}")
    if wrong:
        state, reason = CellState.SILENTLY_WRONG, "; ".join(wrong)
    elif _failed(matches):
        assert matches is not None
        state, reason = CellState.SUPPORTED_DEGRADED, matches.message
    else:
        state, reason = CellState.SUPPORTED, matches.message if matches is not None else "every finding holds"
    return Judgement(
        state=state,
        reason=reason,
        touched_as_intended=None if coverage is None else coverage.verdict is Verdict.PASS,
        ids_equal=ids_equal,
        logits_bit_identical=None if match is None else match.bit_identical,
        logits_max_abs_diff=None if match is None else match.max_abs_diff,
        noise_floor=None if match is None else match.allowance,
        first_difference=first_difference(tuple(mine), tuple(reference), decode),
        library_ids=tuple(mine),
        reference_ids=tuple(reference),
        grid=grid,
        findings={finding.id: str(finding.verdict) for finding in report.findings},
        left_behind=left_behind,
    )
