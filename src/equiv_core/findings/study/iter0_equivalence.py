"""Finding 3: a plain invoke at position -1 and iter[0] at position n-1 give bit-identical tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.steering import Edit
from equiv_core.config.catalog import ArmName
from equiv_core.findings.comparison import steering_problems, tensor_sha256
from equiv_core.findings.finding import (
    Evidence,
    ExperimentConfig,
    FindingResult,
    GenerationSummary,
    absolute_position,
    experiment,
    ids_text,
    verdict,
)

ID = "iter0_equivalence"


@dataclass(frozen=True, slots=True)
class Iter0Evidence(Evidence):
    layer: int
    plain_position: int
    iter0_position: int
    plain: GenerationSummary
    iter0: GenerationSummary
    reference: GenerationSummary
    unsteered: GenerationSummary
    logits_bit_identical: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "plain_position": self.plain_position,
            "iter0_position": self.iter0_position,
            "plain_ids": list(self.plain.generated_ids),
            "iter0_ids": list(self.iter0.generated_ids),
            "reference_ids": list(self.reference.generated_ids),
            "unsteered_ids": list(self.unsteered.generated_ids),
            "plain": self.plain.to_dict(),
            "iter0": self.iter0.to_dict(),
            "reference": self.reference.to_dict(),
            "unsteered": self.unsteered.to_dict(),
            "logits_bit_identical": self.logits_bit_identical,
        }

    def lines(self) -> list[str]:
        return [
            f"plain invoke (position {self.plain_position}) {ids_text(self.plain.generated_ids)} {self.plain.text!r}",
            f"iter[0]      (position {self.iter0_position}) {ids_text(self.iter0.generated_ids)} {self.iter0.text!r}",
            f"raw hook                  {ids_text(self.reference.generated_ids)}; "
            f"unsteered {ids_text(self.unsteered.generated_ids)}",
            f"logits bit-identical (plain vs iter0): {self.logits_bit_identical}",
        ]

    def generations(self) -> dict[str, GenerationSummary]:
        return {"plain": self.plain, "iter0": self.iter0, "reference": self.reference, "unsteered": self.unsteered}


@experiment(ID, "plain invoke with -1 and iter[0] with n-1 give bit-identical tokens")
def iter0_equivalence(context: SteeringContext, config: ExperimentConfig) -> FindingResult:
    """Run the same edit both ways and against the raw hook; both must match it and must change the output."""
    input_ids = context.encode(config.prompt)
    absolute = absolute_position(config.position, input_ids.shape[1])
    plain = context.nnsight.generate(
        input_ids, config.max_new_tokens, Edit(config.layer, config.position), "prompt", arm=ArmName.PLAIN
    )
    iter0 = context.nnsight.generate(
        input_ids, config.max_new_tokens, Edit(config.layer, absolute), "step0", arm=ArmName.ITER0
    )
    reference = context.reference(input_ids, config.max_new_tokens, Edit(config.layer, absolute))
    unsteered = context.unsteered(input_ids, config.max_new_tokens)

    problems = steering_problems(plain, reference, unsteered)
    problems += [p for p in steering_problems(iter0, reference, unsteered) if p not in problems]
    if plain.generated_ids != iter0.generated_ids:
        problems.append(f"plain {list(plain.generated_ids)} != iter0 {list(iter0.generated_ids)}")
    logits_identical = tensor_sha256(plain.step_logits) == tensor_sha256(iter0.step_logits)
    evidence = Iter0Evidence(
        config.layer,
        config.position,
        absolute,
        GenerationSummary.of(plain, context.decode),
        GenerationSummary.of(iter0, context.decode),
        GenerationSummary.of(reference, context.decode),
        GenerationSummary.of(unsteered, context.decode),
        logits_identical,
    )
    success = (
        f"plain (position {config.position}) and iter0 (position {absolute}) give identical ids "
        f"{list(plain.generated_ids)}, equal to the raw hook; logits bit-identical: {logits_identical}"
    )
    return verdict(ID, config, problems, success, evidence)
