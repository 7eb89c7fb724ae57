"""Finding 3: a plain invoke at position -1 and iter[0] at position n-1 give bit-identical tokens."""

from __future__ import annotations

from equiv_core.comparison import record_summary, steering_problems, tensor_sha256
from equiv_core.context import SteeringContext
from equiv_core.experiments.base import (
    ExperimentConfig,
    FindingResult,
    absolute_position,
    experiment,
    verdict,
)
from equiv_core.steering import Edit

ID = "iter0_equivalence"


@experiment(ID, "plain invoke with -1 and iter[0] with n-1 give bit-identical tokens")
def iter0_equivalence(context: SteeringContext, config: ExperimentConfig) -> FindingResult:
    """Run the same edit both ways and against the raw hook; both must match it and must change the output."""
    input_ids = context.encode(config.prompt)
    absolute = absolute_position(config.position, input_ids.shape[1])
    plain = context.nnsight.generate(
        input_ids, config.max_new_tokens, Edit(config.layer, config.position), "prompt", arm="plain"
    )
    iter0 = context.nnsight.generate(
        input_ids, config.max_new_tokens, Edit(config.layer, absolute), "step0", arm="iter0"
    )
    reference = context.reference(input_ids, config.max_new_tokens, Edit(config.layer, absolute))
    unsteered = context.unsteered(input_ids, config.max_new_tokens)

    problems = steering_problems(plain, reference, unsteered)
    problems += [p for p in steering_problems(iter0, reference, unsteered) if p not in problems]
    if plain.generated_ids != iter0.generated_ids:
        problems.append(f"plain {list(plain.generated_ids)} != iter0 {list(iter0.generated_ids)}")
    logits_identical = tensor_sha256(plain.step_logits) == tensor_sha256(iter0.step_logits)
    evidence = {
        "layer": config.layer,
        "plain_position": config.position,
        "iter0_position": absolute,
        "plain_ids": list(plain.generated_ids),
        "iter0_ids": list(iter0.generated_ids),
        "reference_ids": list(reference.generated_ids),
        "unsteered_ids": list(unsteered.generated_ids),
        "plain": record_summary(plain, context.decode),
        "iter0": record_summary(iter0, context.decode),
        "reference": record_summary(reference, context.decode),
        "unsteered": record_summary(unsteered, context.decode),
        "logits_bit_identical": logits_identical,
    }
    success = (
        f"plain (position {config.position}) and iter0 (position {absolute}) give identical ids "
        f"{list(plain.generated_ids)}, equal to the raw hook; logits bit-identical: {logits_identical}"
    )
    return verdict(ID, config, problems, success, evidence)
