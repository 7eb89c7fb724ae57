"""Types shared by the five experiments: the config they take, the result they return, their registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from equiv_core.context import SteeringContext
from equiv_core.registry import Registry

DEFAULT_PROMPT = "The weather today is"
DEFAULT_MAX_NEW_TOKENS = 5


@dataclass(frozen=True, slots=True)
class ExperimentConfig:
    """What one experiment runs with. ``layer`` is an absolute block index, already validated."""

    prompt: str = DEFAULT_PROMPT
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    layer: int = 0
    position: int = -1  # as written in a plain invoke; -1 is the last prompt token
    edit: str = "zero"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class FindingResult:
    """Whether a finding holds on this model, with the evidence a reader needs to check it."""

    id: str
    title: str
    holds: bool
    message: str
    evidence: dict[str, Any]
    config: ExperimentConfig
    expressible: bool = True  # False: this nnsight version cannot express an arm the finding needs

    @property
    def verdict(self) -> str:
        """PASS, FAIL, or NOT EXPRESSIBLE (the version lacks a feature; neither confirmed nor refuted)."""
        if not self.expressible:
            return "NOT EXPRESSIBLE"
        return "PASS" if self.holds else "FAIL"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "holds": self.holds,
            "verdict": self.verdict,
            "message": self.message,
            "evidence": self.evidence,
            "config": self.config.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class Experiment:
    """A registered experiment: stable id, one-line statement of the finding, and the function."""

    id: str
    title: str
    uses_last_layer: bool  # True: runs at the model's last layer; False: at the configurable layer
    run: Callable[[SteeringContext, ExperimentConfig], FindingResult]


EXPERIMENTS: Registry[Experiment] = Registry("experiment")


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


def verdict(
    id: str, config: ExperimentConfig, problems: list[str], success: str, evidence: dict[str, Any]
) -> FindingResult:
    """A result that holds exactly when there are no problems; the message is the success text or the problems."""
    title = EXPERIMENTS.get(id).title if id in EXPERIMENTS.names() else id
    return FindingResult(id, title, not problems, "; ".join(problems) if problems else success, evidence, config)


def absolute_position(position: int, prompt_length: int) -> int:
    """The absolute index of a (possibly negative) prompt position."""
    return position % prompt_length
