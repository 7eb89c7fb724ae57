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
    id: str, config: SpecFindingConfig, problems: list[str], success: str, evidence: SpecEvidence
) -> FindingResult:
    """A result that holds exactly when there are no problems."""
    title = SPEC_FINDINGS.get(id).title
    return FindingResult(id, title, not problems, "; ".join(problems) if problems else success, evidence, config)
