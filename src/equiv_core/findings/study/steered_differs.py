"""Finding 5: the steered output differs from the unsteered one; without this the other findings are vacuous."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.steering import Edit
from equiv_core.config.catalog import ArmName
from equiv_core.findings.comparison import steering_problems
from equiv_core.findings.finding import (
    Evidence,
    ExperimentConfig,
    FindingResult,
    GenerationSummary,
    experiment,
    ids_text,
    verdict,
)

ID = "steered_differs"


@dataclass(frozen=True, slots=True)
class SteeredDiffersEvidence(Evidence):
    layer: int
    position: int
    steered: GenerationSummary
    unsteered: GenerationSummary
    reference: GenerationSummary
    first_differing_step: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "position": self.position,
            "steered_ids": list(self.steered.generated_ids),
            "unsteered_ids": list(self.unsteered.generated_ids),
            "reference_ids": list(self.reference.generated_ids),
            "first_differing_step": self.first_differing_step,
            "steered": self.steered.to_dict(),
            "unsteered": self.unsteered.to_dict(),
        }

    def lines(self) -> list[str]:
        return [
            f"steered   {ids_text(self.steered.generated_ids)} {self.steered.text!r}",
            f"unsteered {ids_text(self.unsteered.generated_ids)} {self.unsteered.text!r}",
            f"raw hook  {ids_text(self.reference.generated_ids)}",
        ]

    def generations(self) -> dict[str, GenerationSummary]:
        return {"steered": self.steered, "unsteered": self.unsteered}


@experiment(ID, "the steered output differs from the unsteered one")
def steered_differs(context: SteeringContext, config: ExperimentConfig) -> FindingResult:
    """Plain-invoke steering vs plain generation, with the raw hook as referee."""
    input_ids = context.encode(config.prompt)
    edit = Edit(config.layer, config.position)
    steered = context.nnsight.generate(input_ids, config.max_new_tokens, edit, "prompt", arm=ArmName.PLAIN)
    reference = context.reference(input_ids, config.max_new_tokens, edit)
    unsteered = context.unsteered(input_ids, config.max_new_tokens)
    problems = steering_problems(steered, reference, unsteered)
    first_difference = next(
        (
            step
            for step, (a, b) in enumerate(zip(steered.generated_ids, unsteered.generated_ids, strict=True))
            if a != b
        ),
        None,
    )
    evidence = SteeredDiffersEvidence(
        config.layer,
        config.position,
        GenerationSummary.of(steered, context.decode),
        GenerationSummary.of(unsteered, context.decode),
        GenerationSummary.of(reference, context.decode),
        first_difference,
    )
    success = (
        f"steered {context.decode(steered.generated_ids)!r} differs from unsteered "
        f"{context.decode(unsteered.generated_ids)!r} from step {first_difference}"
    )
    return verdict(ID, config, problems, success, evidence)
