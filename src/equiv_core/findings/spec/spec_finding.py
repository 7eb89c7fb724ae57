"""What the spec findings share: their config, the per-arm evidence every one of them carries, their registry.

Each spec finding is a function of one :class:`~equiv_core.findings.spec.spec_run.SpecRun` (every arm generated
once). Its evidence always holds ``arms.<arm>.generated_ids`` and ``arms.<arm>.touched`` (a list of
``[step, layer, position, row]``: what the block observer saw the arm change), the names other tools read, and
``arms.<arm>.recorded`` (what the arm's own code recorded as it edited: the cross-check).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from equiv_core.arms.steering import GenerationRecord, IndexFault, Touch
from equiv_core.config.catalog import SPEC_FINDING_IDS, ArmName
from equiv_core.findings.comparison import rounding_allowance
from equiv_core.findings.finding import Evidence, FindingConfig, FindingResult, GenerationSummary
from equiv_core.findings.spec.spec_run import ArmRun, SpecRun
from equiv_core.spec.steering_spec import SteeringSpec
from equiv_core.support.registry import Registry


@dataclass(frozen=True, slots=True)
class SpecFindingConfig(FindingConfig):
    """A spec finding's input: the prompts (one, or a batch), the number of new tokens and the spec as written."""

    prompts: tuple[str, ...]
    max_new_tokens: int
    spec: SteeringSpec

    def _prompts(self) -> dict[str, Any]:
        return {"prompt": self.prompts[0]} if len(self.prompts) == 1 else {"prompts": list(self.prompts)}

    def to_dict(self) -> dict[str, Any]:
        return {**self._prompts(), "max_new_tokens": self.max_new_tokens, "spec": self.spec.to_dict()}

    def where(self) -> str:
        return f"layers {self.spec.layers.text}"

    def params(self) -> dict[str, Any]:
        prompts = {"prompt": self.prompts[0]} if len(self.prompts) == 1 else {"prompts": " | ".join(self.prompts)}
        return {**prompts, "max_new_tokens": self.max_new_tokens, "spec": self.spec.describe()}


@dataclass(frozen=True, slots=True)
class RowEvidence:
    """One arm on one batch row: what it generated, touched, could not index, and its coverage problems."""

    generation: GenerationSummary
    touched: tuple[Touch, ...]
    faults: tuple[IndexFault, ...]
    coverage_problems: tuple[str, ...]
    recorded: tuple[Touch, ...] | None = None  # what the arm's code recorded, where ``touched`` was observed

    def to_dict(self) -> dict[str, Any]:
        recorded = {} if self.recorded is None else {"recorded": [touch.to_list() for touch in self.recorded]}
        return {
            **self.generation.to_dict(),
            "touched": [touch.to_list() for touch in self.touched],
            **recorded,
            "index_faults": [fault.to_dict() for fault in self.faults],
            "coverage_problems": list(self.coverage_problems),
        }


@dataclass(frozen=True, slots=True)
class ArmEvidence:
    """One arm as every spec finding reports it: what it is, and per batch row what it did (no rows: the arm
    could not write the spec, ``not_expressible`` says why)."""

    name: str
    description: str
    cached: bool
    not_expressible: str
    rows: tuple[RowEvidence, ...]

    @classmethod
    def of(cls, arm: ArmRun, decode: Callable[[tuple[int, ...]], str]) -> ArmEvidence:
        if arm.generation is None:
            return cls(arm.name, arm.description, arm.cached, arm.not_expressible, ())
        rows = tuple(
            RowEvidence(
                GenerationSummary.of(record, decode),
                tuple(sorted(arm.coverage[row].touched)),  # over the steps the row ran (not after its EOS)
                arm.coverage[row].faults,
                tuple(arm.coverage[row].problems()),
                _sorted(arm.coverage[row].recorded),
            )
            for row, record in enumerate(arm.generation.rows)
        )
        return cls(arm.name, arm.description, arm.cached, "", rows)

    @property
    def expressible(self) -> bool:
        return bool(self.rows)

    @property
    def generation(self) -> GenerationSummary | None:
        """Row 0's generation (the only row of a single-prompt run)."""
        return self.rows[0].generation if self.rows else None

    def to_dict(self, flat: bool) -> dict[str, Any]:
        """``flat``: a single prompt, whose row's fields (``generated_ids``, ``touched``, ...) sit on the arm."""
        if not self.rows:
            return {"description": self.description, "expressible": False, "not_expressible": self.not_expressible}
        head = {"description": self.description, "expressible": True, "kv_cache": self.cached}
        return {**head, **self.rows[0].to_dict()} if flat else head


def _sorted(touches: frozenset[Touch] | None) -> tuple[Touch, ...] | None:
    return None if touches is None else tuple(sorted(touches))


def arms_evidence(run: SpecRun) -> dict[str, ArmEvidence]:
    """Every steered arm's evidence, plus the two unsteered generations (no edits, nothing touched)."""
    arms = {name: ArmEvidence.of(arm, run.decode) for name, arm in run.arms.items()}
    for name, records, cached in (
        (ArmName.UNSTEERED, run.unsteered, True),
        (ArmName.UNSTEERED_RECOMPUTE, run.unsteered_recompute, False),
    ):
        rows = tuple(RowEvidence(GenerationSummary.of(record, run.decode), (), (), ()) for record in records)
        description = f"HF generate, no edit, {'with' if cached else 'without'} the KV cache"
        arms[name] = ArmEvidence(name, description, cached, "", rows)
    return arms


@dataclass(frozen=True, slots=True)
class SpecEvidence(Evidence):
    """Base of the spec findings' evidence: the arms, and the finding's own fields in subclasses.

    JSON: ``arms.<arm>`` (for a single prompt with ``generated_ids`` and ``touched`` on it) and, for a batch,
    ``rows[i].arms.<arm>.generated_ids`` / ``touched`` per prompt.
    """

    arms: dict[str, ArmEvidence]
    prompts: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        flat = len(self.prompts) == 1
        payload: dict[str, Any] = {"arms": {name: arm.to_dict(flat) for name, arm in self.arms.items()}}
        if not flat:
            payload["rows"] = [
                {
                    "prompt": prompt,
                    "arms": {name: arm.rows[row].to_dict() for name, arm in self.arms.items() if arm.rows},
                }
                for row, prompt in enumerate(self.prompts)
            ]
        return {**payload, **self.details()}

    def details(self) -> dict[str, Any]:
        """The finding's own fields, beside ``arms``."""
        return {}

    def generations(self) -> dict[str, GenerationSummary]:
        flat = len(self.prompts) == 1
        return {
            name if flat else f"{name}.row{row}": evidence.generation
            for name, arm in self.arms.items()
            for row, evidence in enumerate(arm.rows)
        }


@dataclass(frozen=True, slots=True)
class SpecFinding:
    """A registered spec finding: stable id, one-line statement, and the judge of a :class:`SpecRun`."""

    id: str
    title: str
    judge: Callable[[SpecRun, SpecFindingConfig], FindingResult]


SPEC_FINDINGS: Registry[SpecFinding] = Registry("spec finding", SPEC_FINDING_IDS)


def spec_finding(
    id: str, title: str
) -> Callable[
    [Callable[[SpecRun, SpecFindingConfig], FindingResult]], Callable[[SpecRun, SpecFindingConfig], FindingResult]
]:
    """Register a spec finding under a stable id."""

    def register(
        function: Callable[[SpecRun, SpecFindingConfig], FindingResult],
    ) -> Callable[[SpecRun, SpecFindingConfig], FindingResult]:
        SPEC_FINDINGS.add(id, SpecFinding(id, title, function))
        return function

    return register


def spec_verdict(
    id: str,
    config: SpecFindingConfig,
    problems: list[str],
    success: str,
    evidence: SpecEvidence,
    applicable: str = "",
    expressible: str = "",
) -> FindingResult:
    """A result that holds exactly when there are no problems.

    ``applicable`` / ``expressible``: when non-empty, the reason this input cannot test the finding (NOT
    APPLICABLE) or this nnsight cannot write the arm it needs (NOT EXPRESSIBLE); neither counts as a pass.
    """
    title = SPEC_FINDINGS.get(id).title
    if applicable:
        return FindingResult(id, title, False, applicable, evidence, config, applicable=False)
    if expressible:
        return FindingResult(id, title, False, expressible, evidence, config, expressible=False)
    return FindingResult(id, title, not problems, "; ".join(problems) if problems else success, evidence, config)


def first_difference(first: GenerationRecord, second: GenerationRecord) -> int | None:
    """The first step whose chosen tokens differ (a row that ended earlier differs where the other goes on), or
    None."""
    pairs = zip(first.generated_ids, second.generated_ids, strict=False)
    differing = next((step for step, (a, b) in enumerate(pairs) if a != b), None)
    if differing is None and len(first.generated_ids) != len(second.generated_ids):
        return min(len(first.generated_ids), len(second.generated_ids))
    return differing


def same_input_steps(first: GenerationRecord, second: GenerationRecord) -> int:
    """How many leading steps had identical inputs: up to and including the first step whose chosen tokens differ
    (its input was still the same prefix)."""
    differing = first_difference(first, second)
    steps = min(len(first.generated_ids), len(second.generated_ids)) if differing is None else differing + 1
    return min(steps, len(first.step_logits), len(second.step_logits))


def same_input_diff(first: GenerationRecord, second: GenerationRecord) -> float:
    """Max abs logits difference over the steps whose inputs were identical (:func:`same_input_steps`); 0 when
    there are none, NaN if either holds a non-finite logit."""
    steps = same_input_steps(first, second)
    if steps == 0:
        return 0.0
    return float((first.step_logits[:steps] - second.step_logits[:steps]).abs().max())


def _largest(record: GenerationRecord, steps: int) -> float:
    return float(record.step_logits[:steps].abs().max()) if steps else 0.0


def row_allowance(run: SpecRun, row: int, steered: GenerationRecord, other: GenerationRecord) -> tuple[float, float]:
    """``(floor, allowance)`` for comparing two steered generations of row ``row`` on their identical-input steps:
    the unsteered model's own cached-vs-recompute difference on that row, in this run, scaled to the steered
    logits (:func:`equiv_core.findings.comparison.rounding_allowance`)."""
    return floor_allowance(run.unsteered[row], run.unsteered_recompute[row], steered, other, run.dtype)


def floor_allowance(
    unsteered: GenerationRecord,
    unsteered_recompute: GenerationRecord,
    steered: GenerationRecord,
    other: GenerationRecord,
    dtype: torch.dtype,
) -> tuple[float, float]:
    """``(floor, allowance)``: the noise floor (``unsteered`` with vs without the KV cache, on identical inputs) and
    how far ``steered`` and ``other`` may differ in logits for it (:func:`rounding_allowance`)."""
    floor = same_input_diff(unsteered, unsteered_recompute)
    allowance = rounding_allowance(
        floor,
        _largest(steered, same_input_steps(steered, other)),
        _largest(unsteered, same_input_steps(unsteered, unsteered_recompute)),
        dtype,
    )
    return floor, allowance


def non_finite_problems(run: SpecRun) -> list[str]:
    """Arms whose logits hold NaN or infinity: nothing about them can be compared."""
    records = {name: arm.rows for name, arm in run.arms.items() if arm.expressible}
    records |= {ArmName.UNSTEERED: run.unsteered, ArmName.UNSTEERED_RECOMPUTE: run.unsteered_recompute}
    return [
        f"{name}: logits hold NaN or infinity, so nothing can be compared"
        for name, rows in records.items()
        if not all(bool(record.step_logits.isfinite().all()) for record in rows)
    ]


def rows_with_intent(run: SpecRun) -> list[int]:
    """Rows that had something to steer in the steps they ran (a row that ended at EOS before its first intended
    position had nothing, and its tokens say nothing about steering)."""
    return [check.row for check in run.arms[ArmName.HOOK].coverage if check.intended]


def ended_before_intent(run: SpecRun) -> str:
    """The rows left out because they ended at EOS before their first intended position, in words, or ''."""
    rows = [row for row in range(run.batch_size) if row not in rows_with_intent(run)]
    if not rows:
        return ""
    which = "the prompt" if run.batch_size == 1 else f"rows {', '.join(map(str, rows))}"
    return f"{which} ended at EOS before the first intended position, so nothing was steered there"


def row_label(run: SpecRun, row: int) -> str:
    """``"row 1: "`` in a batch, ``""`` for a single prompt (messages stay as they were)."""
    return f"row {row}: " if run.batch_size > 1 else ""


def written_arm_missing(run: SpecRun) -> str:
    """Why the spec as written (the ``iter`` arm) could not be generated, or ''."""
    arm = run.arms[ArmName.ITER]
    return (
        "" if arm.expressible else f"the spec as written ({arm.description}) is not expressible: {arm.not_expressible}"
    )
