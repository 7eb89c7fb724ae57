"""What the spec findings share: their config, the per-arm evidence every one of them carries, their registry.

Each spec finding is a function of one :class:`~equiv_core.spec_run.SpecRun` (every arm generated once). Its
evidence always holds ``arms.<arm>.generated_ids`` and ``arms.<arm>.touched`` (a list of
``[step, layer, position, row]``), the names other tools read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from equiv_core.coverage import IndexFault, Touch
from equiv_core.experiments.base import Evidence, FindingConfig, FindingResult, GenerationSummary
from equiv_core.registry import Registry
from equiv_core.spec import SteeringSpec
from equiv_core.spec_run import ArmRun, SpecRun
from equiv_core.steering import GenerationRecord


@dataclass(frozen=True, slots=True)
class SpecFindingConfig(FindingConfig):
    """A spec finding's input: the prompt, the number of new tokens and the spec as written."""

    prompt: str
    max_new_tokens: int
    spec: SteeringSpec

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "max_new_tokens": self.max_new_tokens, "spec": self.spec.to_dict()}

    def where(self) -> str:
        return f"layers {self.spec.layers.text}"

    def params(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "max_new_tokens": self.max_new_tokens, "spec": self.spec.describe()}


@dataclass(frozen=True, slots=True)
class ArmEvidence:
    """One arm as every spec finding reports it."""

    name: str
    description: str
    cached: bool
    not_expressible: str  # empty when the arm ran
    generation: GenerationSummary | None
    touched: tuple[Touch, ...]
    faults: tuple[IndexFault, ...]
    coverage_problems: tuple[str, ...]

    @classmethod
    def of(cls, arm: ArmRun, decode: Callable[[tuple[int, ...]], str]) -> ArmEvidence:
        if arm.generation is None or arm.coverage is None:
            return cls(arm.name, arm.description, arm.cached, arm.not_expressible, None, (), (), ())
        return cls(
            arm.name,
            arm.description,
            arm.cached,
            "",
            GenerationSummary.of(arm.generation.record, decode),
            tuple(sorted(arm.generation.touched)),
            arm.generation.faults,
            tuple(arm.coverage.problems()),
        )

    @property
    def expressible(self) -> bool:
        return self.generation is not None

    def to_dict(self) -> dict[str, Any]:
        if self.generation is None:
            return {"description": self.description, "expressible": False, "not_expressible": self.not_expressible}
        return {
            "description": self.description,
            "expressible": True,
            "kv_cache": self.cached,
            **self.generation.to_dict(),
            "touched": [touch.to_list() for touch in self.touched],
            "index_faults": [fault.to_dict() for fault in self.faults],
            "coverage_problems": list(self.coverage_problems),
        }


def arms_evidence(run: SpecRun) -> dict[str, ArmEvidence]:
    """Every steered arm's evidence, plus the two unsteered generations (no edits, nothing touched)."""
    arms = {name: ArmEvidence.of(arm, run.decode) for name, arm in run.arms.items()}
    for name, record, cached in (
        ("unsteered", run.unsteered, True),
        ("unsteered_recompute", run.unsteered_recompute, False),
    ):
        summary = GenerationSummary.of(record, run.decode)
        description = f"HF generate, no edit, {'with' if cached else 'without'} the KV cache"
        arms[name] = ArmEvidence(name, description, cached, "", summary, (), (), ())
    return arms


@dataclass(frozen=True, slots=True)
class SpecEvidence(Evidence):
    """Base of the spec findings' evidence: the arms, and the finding's own fields in subclasses."""

    arms: dict[str, ArmEvidence]

    def to_dict(self) -> dict[str, Any]:
        return {"arms": {name: arm.to_dict() for name, arm in self.arms.items()}, **self.details()}

    def details(self) -> dict[str, Any]:
        """The finding's own fields, beside ``arms``."""
        return {}

    def generations(self) -> dict[str, GenerationSummary]:
        return {name: arm.generation for name, arm in self.arms.items() if arm.generation is not None}


@dataclass(frozen=True, slots=True)
class SpecFinding:
    """A registered spec finding: stable id, one-line statement, and the judge of a :class:`SpecRun`."""

    id: str
    title: str
    judge: Callable[[SpecRun, SpecFindingConfig], FindingResult]


SPEC_FINDINGS: Registry[SpecFinding] = Registry("spec finding")


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
    """The first step whose chosen tokens differ, or None."""
    pairs = zip(first.generated_ids, second.generated_ids, strict=True)
    return next((step for step, (a, b) in enumerate(pairs) if a != b), None)


def same_input_diff(first: GenerationRecord, second: GenerationRecord) -> float:
    """Max abs logits difference over the steps whose inputs were identical: up to and including the first step
    whose chosen tokens differ (its input was still the same prefix). NaN if either holds a non-finite logit."""
    differing = first_difference(first, second)
    steps = len(first.generated_ids) if differing is None else differing + 1
    return float((first.step_logits[:steps] - second.step_logits[:steps]).abs().max())


def noise_floor(run: SpecRun) -> float:
    """The unsteered model's own cached-vs-recompute logits difference on identical inputs, in this run: the size
    of rounding differences between two computation paths of the same steering."""
    return same_input_diff(run.unsteered, run.unsteered_recompute)


def non_finite_problems(run: SpecRun) -> list[str]:
    """Arms whose logits hold NaN or infinity: nothing about them can be compared."""
    records = {name: arm.record for name, arm in run.arms.items() if arm.expressible}
    records |= {"unsteered": run.unsteered, "unsteered_recompute": run.unsteered_recompute}
    return [
        f"{name}: logits hold NaN or infinity, so nothing can be compared"
        for name, record in records.items()
        if not bool(record.step_logits.isfinite().all())
    ]


def written_arm_missing(run: SpecRun) -> str:
    """Why the spec as written (the ``iter`` arm) could not be generated, or ''."""
    arm = run.arms["iter"]
    return (
        "" if arm.expressible else f"the spec as written ({arm.description}) is not expressible: {arm.not_expressible}"
    )
