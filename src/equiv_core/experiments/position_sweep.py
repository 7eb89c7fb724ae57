"""Finding 1: zeroing one prompt position at the last layer changes the output only at the last prompt token.

Why: a block's output at the last layer feeds only that position's own logits (the KV cache of later steps is
built from layer inputs, not the last layer's output), so only the last prompt position can change what is
generated.
"""

from __future__ import annotations

from typing import Any

from equiv_core.context import SteeringContext
from equiv_core.experiments.base import ExperimentConfig, FindingResult, experiment, verdict
from equiv_core.steering import Edit

ID = "position_sweep"


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
    per_position: list[dict[str, Any]] = []
    for position in range(prompt_length):
        edit = Edit(config.layer, position)
        steered = context.nnsight.generate(input_ids, config.max_new_tokens, edit, "prompt", arm="plain")
        reference = context.reference(input_ids, config.max_new_tokens, edit)
        changed = steered.generated_ids != unsteered.generated_ids
        per_position.append(
            {
                "position": position,
                "token": context.decode([int(input_ids[0, position])]),
                "generated_ids": list(steered.generated_ids),
                "text": context.decode(steered.generated_ids),
                "changed": changed,
                "matches_reference": steered.generated_ids == reference.generated_ids,
            }
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
    changed_positions = [entry["position"] for entry in per_position if entry["changed"]]
    evidence = {
        "layer": config.layer,
        "prompt_length": prompt_length,
        "last_prompt_position": last,
        "unsteered_ids": list(unsteered.generated_ids),
        "unsteered_text": context.decode(unsteered.generated_ids),
        "positions": per_position,
        "generated_ids_by_position": {str(entry["position"]): entry["generated_ids"] for entry in per_position},
        "changed_positions": changed_positions,
    }
    success = f"only position {last} (the last prompt token) changes the output at layer {config.layer}"
    return verdict(ID, config, problems, success, evidence)
