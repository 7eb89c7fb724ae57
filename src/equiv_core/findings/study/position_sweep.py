"""Finding 1: zeroing one prompt position at the last layer changes the output only at the last prompt token.

Why: a block's output at the last layer feeds only that position's own logits (the KV cache of later steps is
built from layer inputs, not the last layer's output), so only the last prompt position can change what is
generated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.steering import Edit
from equiv_core.config.catalog import ArmName
from equiv_core.findings.finding import (
    Evidence,
    ExperimentConfig,
    FindingResult,
    GenerationSummary,
    experiment,
    verdict,
)

ID = "position_sweep"


@dataclass(frozen=True, slots=True)
class PositionOutcome:
    """What zeroing one prompt position did."""

    position: int
    token: str
    generated_ids: tuple[int, ...]
    text: str
    changed: bool  # differs from unsteered generation
    matches_reference: bool  # nnsight ids equal the raw hook's

    def to_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "token": self.token,
            "generated_ids": list(self.generated_ids),
            "text": self.text,
            "changed": self.changed,
            "matches_reference": self.matches_reference,
        }


@dataclass(frozen=True, slots=True)
class PositionSweepEvidence(Evidence):
    layer: int
    prompt_length: int
    unsteered: GenerationSummary
    positions: tuple[PositionOutcome, ...]

    @property
    def changed_positions(self) -> list[int]:
        return [outcome.position for outcome in self.positions if outcome.changed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "prompt_length": self.prompt_length,
            "last_prompt_position": self.prompt_length - 1,
            "unsteered_ids": list(self.unsteered.generated_ids),
            "unsteered_text": self.unsteered.text,
            "positions": [outcome.to_dict() for outcome in self.positions],
            "generated_ids_by_position": {str(o.position): list(o.generated_ids) for o in self.positions},
            "changed_positions": self.changed_positions,
        }

    def lines(self) -> list[str]:
        lines = [f"unsteered           -> {self.unsteered.text!r}"]
        for outcome in self.positions:
            mark = "CHANGED" if outcome.changed else "same"
            lines.append(f"zero position {outcome.position:<3} {outcome.token!r:<12} -> {outcome.text!r}  {mark}")
        return lines

    def generations(self) -> dict[str, GenerationSummary]:
        swept = {f"zero_position_{o.position}": GenerationSummary(o.generated_ids, o.text) for o in self.positions}
        return {"unsteered": self.unsteered, **swept}


@experiment(
    ID,
    "zeroing a prompt position at the last layer changes the output only at the last prompt token",
    uses_last_layer=True,
)
def position_sweep(context: SteeringContext, config: ExperimentConfig) -> FindingResult:
    """Zero each prompt position in turn (plain invoke) and record which ones change the generated text."""
    input_ids = context.encode(config.prompt)
    prompt_length = input_ids.shape[1]
    last = prompt_length - 1
    unsteered = context.unsteered(input_ids, config.max_new_tokens)
    problems: list[str] = []
    outcomes: list[PositionOutcome] = []
    for position in range(prompt_length):
        edit = Edit(config.layer, position)
        steered = context.nnsight.generate(input_ids, config.max_new_tokens, edit, "prompt", arm=ArmName.PLAIN)
        reference = context.reference(input_ids, config.max_new_tokens, edit)
        changed = steered.generated_ids != unsteered.generated_ids
        outcomes.append(
            PositionOutcome(
                position,
                context.decode([int(input_ids[0, position])]),
                steered.generated_ids,
                context.decode(steered.generated_ids),
                changed,
                steered.generated_ids == reference.generated_ids,
            )
        )
        if steered.generated_ids != reference.generated_ids:
            problems.append(
                f"position {position}: nnsight ids {list(steered.generated_ids)} differ from the "
                f"raw-hook reference {list(reference.generated_ids)}"
            )
        if position == last and not changed:
            invisible = reference.generated_ids == unsteered.generated_ids
            problems.append(
                "zeroing the last prompt position did not change the output "
                + (
                    "(nor did the raw hook: the edit is invisible in this output)"
                    if invisible
                    else "(the raw hook did: steering not applied)"
                )
            )
        elif position != last and changed:
            problems.append(f"zeroing position {position} (not the last) changed the output")
    evidence = PositionSweepEvidence(
        config.layer,
        prompt_length,
        GenerationSummary(unsteered.generated_ids, context.decode(unsteered.generated_ids)),
        tuple(outcomes),
    )
    success = f"only position {last} (the last prompt token) changes the output at layer {config.layer}"
    return verdict(ID, config, problems, success, evidence)
