"""Types shared by the findings: the config they take, the typed evidence and result they return, their registry.

A finding's evidence is a dataclass that knows how to print itself (``lines``), which generations it holds
(``generations``: ids, text and logits hash per arm, for MLflow and cross-run comparison), which numbers are worth
logging as metrics, and its JSON form (``to_dict``): adding a finding is one module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.steering import GenerationRecord
from equiv_core.config.catalog import DEFAULT_MAX_NEW_TOKENS, DEFAULT_PROMPT, STUDY_FINDINGS
from equiv_core.findings.comparison import tensor_sha256
from equiv_core.findings.verdict import Verdict
from equiv_core.support.errors import UserInputError
from equiv_core.support.registry import Registry

ORIGINAL_EDIT = "zero"  # the original study's edit; other edits are steering specs (equiv_core.spec.steering_spec)


class FindingConfig:
    """Base of what a finding ran with: JSON form, a short "where" for the report, params for MLflow."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def where(self) -> str:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class ExperimentConfig(FindingConfig):
    """What one of the five findings runs with. ``layer`` is an absolute block index, already validated."""

    prompt: str = DEFAULT_PROMPT
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    layer: int = 0
    position: int = -1  # as written in a plain invoke; -1 is the last prompt token
    edit: str = ORIGINAL_EDIT

    def __post_init__(self) -> None:
        if self.edit != ORIGINAL_EDIT:
            raise UserInputError(
                f"edit {self.edit!r}: the five findings use the original study's {ORIGINAL_EDIT!r} edit; "
                "other edits are steering specs (--op)"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def where(self) -> str:
        return f"layer {self.layer}"

    def params(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "position": self.position,
            "max_new_tokens": self.max_new_tokens,
            "prompt": self.prompt,
        }


@dataclass(frozen=True, slots=True)
class GenerationSummary:
    """One arm's generation as evidence: token ids (prompt excluded), decoded text, SHA-256 of per-step logits
    (``None`` where the logits were not kept)."""

    generated_ids: tuple[int, ...]
    text: str
    logits_sha256: str | None = None

    @classmethod
    def of(cls, record: GenerationRecord, decode: Callable[[tuple[int, ...]], str]) -> GenerationSummary:
        return cls(record.generated_ids, decode(record.generated_ids), tensor_sha256(record.step_logits))

    def to_dict(self) -> dict[str, Any]:
        summary: dict[str, Any] = {"generated_ids": list(self.generated_ids), "text": self.text}
        if self.logits_sha256 is not None:
            summary["logits_sha256"] = self.logits_sha256
        return summary


class Evidence:
    """Base of every finding's evidence (subclasses are frozen dataclasses)."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def lines(self) -> list[str]:
        """Report lines that show what decided the verdict (without the verdict itself)."""
        return []

    def generations(self) -> dict[str, GenerationSummary]:
        """The generations this evidence holds, by arm name."""
        return {}

    def metrics(self) -> dict[str, float]:
        """Numbers worth plotting across runs (e.g. logits differences)."""
        return {}


@dataclass(frozen=True, slots=True)
class NoEvidence(Evidence):
    """A finding that stopped before gathering evidence: ``reason`` says why (``kind``: the JSON key)."""

    kind: str = "skipped"
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {self.kind: self.reason} if self.reason else {}


@dataclass(frozen=True, slots=True)
class FindingResult:
    """Whether a finding holds on this model, with the evidence a reader needs to check it."""

    id: str
    title: str
    holds: bool
    message: str
    evidence: Evidence
    config: FindingConfig
    expressible: bool = True  # False: this nnsight version cannot express an arm the finding needs
    applicable: bool = True  # False: the finding cannot be tested with this input (e.g. 1 new token)

    @property
    def verdict(self) -> Verdict:
        """PASS, FAIL, NOT EXPRESSIBLE (the version lacks a feature) or NOT APPLICABLE (this input cannot test
        the finding); the last two neither confirm nor refute it."""
        if not self.applicable:
            return Verdict.NOT_APPLICABLE
        if not self.expressible:
            return Verdict.NOT_EXPRESSIBLE
        return Verdict.PASS if self.holds else Verdict.FAIL

    @property
    def counts(self) -> bool:
        """Whether this result takes part in "all findings hold" (a NOT APPLICABLE one does not)."""
        return self.applicable

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "holds": self.holds,
            "verdict": self.verdict,
            "message": self.message,
            "evidence": self.evidence.to_dict(),
            "config": self.config.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class Experiment:
    """A registered experiment: stable id, one-line statement of the finding, and the function."""

    id: str
    title: str
    uses_last_layer: bool  # True: runs at the model's last layer; False: at the configurable layer
    run: Callable[[SteeringContext, ExperimentConfig], FindingResult]


EXPERIMENTS: Registry[Experiment] = Registry("experiment", STUDY_FINDINGS)


def experiment(
    id: str, title: str, uses_last_layer: bool = False
) -> Callable[
    [Callable[[SteeringContext, ExperimentConfig], FindingResult]],
    Callable[[SteeringContext, ExperimentConfig], FindingResult],
]:
    """Register an experiment function under a stable id."""

    def register(
        function: Callable[[SteeringContext, ExperimentConfig], FindingResult],
    ) -> Callable[[SteeringContext, ExperimentConfig], FindingResult]:
        EXPERIMENTS.add(id, Experiment(id, title, uses_last_layer, function))
        return function

    return register


def verdict(id: str, config: ExperimentConfig, problems: list[str], success: str, evidence: Evidence) -> FindingResult:
    """A result that holds exactly when there are no problems; the message is the success text or the problems."""
    title = EXPERIMENTS.get(id).title if id in EXPERIMENTS.names() else id
    return FindingResult(id, title, not problems, "; ".join(problems) if problems else success, evidence, config)


def not_applicable(id: str, config: ExperimentConfig, reason: str) -> FindingResult:
    """A result for input that cannot test the finding (verdict NOT APPLICABLE; it does not fail the run)."""
    title = EXPERIMENTS.get(id).title if id in EXPERIMENTS.names() else id
    return FindingResult(id, title, False, reason, NoEvidence("not_applicable", reason), config, applicable=False)


def absolute_position(position: int, prompt_length: int) -> int:
    """The absolute index of a (possibly negative) prompt position."""
    return position % prompt_length


def ids_text(ids: tuple[int, ...] | list[int]) -> str:
    """Token ids as the report prints them: ``[1, 2, 3]``."""
    return "[" + ", ".join(str(token) for token in ids) + "]"
