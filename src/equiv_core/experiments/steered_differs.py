"""Finding 5: the steered output differs from the unsteered one; without this the other findings are vacuous."""

from __future__ import annotations

from equiv_core.comparison import record_summary, steering_problems
from equiv_core.context import SteeringContext
from equiv_core.experiments.base import ExperimentConfig, FindingResult, experiment, verdict
from equiv_core.steering import Edit

ID = "steered_differs"


@experiment(ID, "the steered output differs from the unsteered one")
def steered_differs(context: SteeringContext, config: ExperimentConfig) -> FindingResult:
    """Plain-invoke steering vs plain generation, with the raw hook as referee."""
    input_ids = context.encode(config.prompt)
    edit = Edit(config.layer, config.position)
    steered = context.nnsight.generate(input_ids, config.max_new_tokens, edit, "prompt", arm="plain")
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
    evidence = {
        "layer": config.layer,
        "position": config.position,
        "steered_ids": list(steered.generated_ids),
        "unsteered_ids": list(unsteered.generated_ids),
        "reference_ids": list(reference.generated_ids),
        "first_differing_step": first_difference,
        "steered": record_summary(steered, context.decode),
        "unsteered": record_summary(unsteered, context.decode),
    }
    success = (
        f"steered {context.decode(steered.generated_ids)!r} differs from unsteered "
        f"{context.decode(unsteered.generated_ids)!r} from step {first_difference}"
    )
    return verdict(ID, config, problems, success, evidence)
