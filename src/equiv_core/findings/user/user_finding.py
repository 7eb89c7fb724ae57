"""What the user findings share: their config, the per-arm evidence (the layout of spec mode, with the arm
``user``), the noise floor, their registry.

Evidence JSON: ``arms.user.generated_ids`` and ``arms.user.touched`` (``[step, layer, position, row]``, observed),
beside ``arms.hook`` (the raw-hook reference of the intent), ``arms.unsteered`` and ``arms.unsteered_after``; for a
batch, per row under ``rows[i].arms``, as in spec mode (:mod:`equiv_core.findings.spec.spec_finding`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from equiv_core.arms.steering import GenerationRecord
from equiv_core.config.catalog import USER_FINDING_IDS, ArmName
from equiv_core.findings.finding import FindingResult, GenerationSummary, ids_text
from equiv_core.findings.spec.spec_finding import (
    ArmEvidence,
    RowEvidence,
    SpecEvidence,
    SpecFindingConfig,
    floor_allowance,
)
from equiv_core.findings.user.user_run import Phase, UserRun
from equiv_core.support.registry import Registry


@dataclass(frozen=True, slots=True)
class UserFindingConfig(SpecFindingConfig):
    """A user finding's input: the spec findings' (prompts, new tokens, the intent as a spec) and the code checked."""

    target: str = ""
    form: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**SpecFindingConfig.to_dict(self), "check": {"target": self.target, "form": self.form}}

    def params(self) -> dict[str, Any]:
        return {**SpecFindingConfig.params(self), "check": self.target, "form": self.form}


def _rows(records: tuple[GenerationRecord, ...], run: UserRun) -> tuple[RowEvidence, ...]:
    return tuple(RowEvidence(GenerationSummary.of(record, run.decode), (), (), ()) for record in records)


def user_arms_evidence(run: UserRun) -> dict[str, ArmEvidence]:
    """The user's arm (observed touches and coverage problems per row), the reference, and the unsteered runs."""
    user_rows = tuple(
        RowEvidence(
            GenerationSummary.of(record, run.decode),
            tuple(sorted(check.touched)),
            (),
            tuple(check.problems()),
        )
        for record, check in zip(run.user, run.coverage, strict=True)
    )
    reference = run.reference
    reference_rows = (
        ()
        if reference is None
        else tuple(
            RowEvidence(
                GenerationSummary.of(record, run.decode),
                tuple(sorted(t for t in reference.touched if t.row == row)),
                (),
                (),
            )
            for row, record in enumerate(reference.rows)
        )
    )
    kv = "with" if run.cached else "without"
    arms: dict[str, ArmEvidence] = {
        ArmName.USER: ArmEvidence(
            ArmName.USER, f"{run.steering.describe()}, observed at every block", run.cached, "", user_rows
        ),
        ArmName.HOOK: ArmEvidence(
            ArmName.HOOK,
            f"the intent with a raw PyTorch forward hook + HF generate, {kv} the KV cache",
            run.cached,
            "",
            reference_rows,
        ),
        ArmName.UNSTEERED: ArmEvidence(
            ArmName.UNSTEERED,
            "HF generate, no edit, before the user's steering ran",
            True,
            "",
            _rows(run.unsteered, run),
        ),
        ArmName.UNSTEERED_AFTER: ArmEvidence(
            ArmName.UNSTEERED_AFTER,
            "HF generate, no edit, after the user's steering returned",
            True,
            "",
            _rows(run.after, run),
        ),
    }
    for name in [name for name, arm in arms.items() if name != ArmName.USER and not arm.rows]:
        del arms[name]  # not generated: no finding of this check needed it
    if run.unsteered_recompute is not None:
        arms[ArmName.UNSTEERED_RECOMPUTE] = ArmEvidence(
            ArmName.UNSTEERED_RECOMPUTE,
            "HF generate, no edit, without the KV cache (the noise floor)",
            False,
            "",
            _rows(run.unsteered_recompute, run),
        )
    return arms


def noise_allowance(run: UserRun, row: int, steered: GenerationRecord, other: GenerationRecord) -> tuple[float, float]:
    """``(floor, allowance)`` for two generations of ``row`` whose ids agree but logits do not: the model's own
    cached-vs-recompute difference in this run, scaled (:func:`floor_allowance`); ``(0, 0)`` where it was not
    measured (no row needed it: every comparison was bit-identical or had different ids)."""
    if run.unsteered_recompute is None:
        return 0.0, 0.0
    return floor_allowance(run.unsteered[row], run.unsteered_recompute[row], steered, other, run.dtype)


UserJudge = Callable[[UserRun, UserFindingConfig], FindingResult]


@dataclass(frozen=True, slots=True)
class UserFinding:
    """A registered user finding: stable id, one-line statement, and the judge of a :class:`UserRun`."""

    id: str
    title: str
    judge: UserJudge
    needs: frozenset[Phase]  # the generations besides the user's that the judge reads


USER_FINDINGS: Registry[UserFinding] = Registry("user finding", USER_FINDING_IDS)


def user_finding(id: str, title: str, needs: frozenset[Phase]) -> Callable[[UserJudge], UserJudge]:
    """Register a user finding under a stable id, with the generations besides the user's it reads."""

    def register(function: UserJudge) -> UserJudge:
        USER_FINDINGS.add(id, UserFinding(id, title, function, needs))
        return function

    return register


def user_verdict(
    id: str, config: UserFindingConfig, problems: list[str], success: str, evidence: Any, applicable: str = ""
) -> FindingResult:
    """A result that holds exactly when there are no problems (``applicable``: why this input cannot test it)."""
    title = USER_FINDINGS.get(id).title
    if applicable:
        return FindingResult(id, title, False, applicable, evidence, config, applicable=False)
    return FindingResult(id, title, not problems, "; ".join(problems) if problems else success, evidence, config)


def untrusted_reference(run: UserRun) -> list[str]:
    """The problem with a reference made after the user's steering (without the KV cache, as the user's code ran)
    when that steering left anything behind; [] otherwise."""
    if run.cached or not run.tainted or run.reference is None:
        return []
    return [
        f"the reference without the KV cache had to run after the user's steering, and {run.tainted}: it cannot "
        "be trusted (see hooks_removed)"
    ]


def generation_line(evidence: SpecEvidence, name: str, row: int, label: str, width: int) -> str:
    """``row 1 user   [ids] 'text'``: what arm ``name`` generated in ``row``, for an evidence's report lines."""
    generation = evidence.arms[name].rows[row].generation
    return f"{label}{name:<{width}} {ids_text(generation.generated_ids)} {generation.text!r}"


def row_label(run: UserRun, row: int) -> str:
    return f"row {row}: " if run.batch.size > 1 else ""
