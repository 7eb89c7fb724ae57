"""Finding 2: an edit made at generation step 0 persists through the KV cache.

Evidence: one full forward pass over prompt + generated tokens, with the same edit and no cache, predicts
the same next token at every step as generation did; its logits are compared with generation's bit for bit
and under a stated tolerance (cached and recomputed matmuls round differently, so bit-exactness is reported,
not required).
"""

from __future__ import annotations

import torch

from equiv_core.comparison import LOGITS_TOLERANCE, compare_tensors, record_summary, steering_problems
from equiv_core.context import SteeringContext
from equiv_core.experiments.base import (
    ExperimentConfig,
    FindingResult,
    absolute_position,
    experiment,
    verdict,
)
from equiv_core.steering import Edit

ID = "kv_cache_persistence"


@experiment(ID, "a step-0 edit persists: a full forward pass with the same edit predicts what generation did")
def kv_cache_persistence(context: SteeringContext, config: ExperimentConfig) -> FindingResult:
    """Generate with an iter[0] edit, then re-run prompt + generated tokens in one pass with the same edit."""
    input_ids = context.encode(config.prompt)
    prompt_length = input_ids.shape[1]
    edit = Edit(config.layer, absolute_position(config.position, prompt_length))
    generated = context.nnsight.generate(input_ids, config.max_new_tokens, edit, "step0", arm="iter0")
    reference = context.reference(input_ids, config.max_new_tokens, edit)
    unsteered = context.unsteered(input_ids, config.max_new_tokens)

    # Position prompt_length-1+k of the full pass predicts generated token k.
    continuation = torch.tensor([list(generated.generated_ids[:-1])], device=input_ids.device, dtype=input_ids.dtype)
    full_sequence = torch.cat([input_ids, continuation], dim=1)
    predicting = slice(prompt_length - 1, None)
    forward_logits = context.nnsight.forward_logits(full_sequence, edit)[predicting]
    reference_logits = context.reference_forward_logits(full_sequence, edit)[predicting]
    unedited_logits = context.reference_forward_logits(full_sequence, None)[predicting]
    predicted = context.greedy_choice(forward_logits)
    unedited_predicted = context.greedy_choice(unedited_logits)

    atol, rtol = LOGITS_TOLERANCE[context.dtype]
    versus_generation = compare_tensors(forward_logits, generated.step_logits, atol, rtol)
    versus_reference = compare_tensors(forward_logits, reference_logits, atol, rtol)

    problems = steering_problems(generated, reference, unsteered)
    if predicted != generated.generated_ids:
        problems.append(
            f"the full forward pass predicts {list(predicted)}, generation gave "
            f"{list(generated.generated_ids)}: the step-0 edit did not persist as the cache implies"
        )
    if not versus_generation.within_tolerance:
        problems.append(
            f"full-pass logits differ from generation's by {versus_generation.max_abs_diff:.3g} "
            f"(tolerance atol={atol}, rtol={rtol})"
        )
    if not versus_reference.within_tolerance:
        problems.append(
            f"nnsight full-pass logits differ from the raw-hook pass by {versus_reference.max_abs_diff:.3g}"
        )
    evidence = {
        "layer": config.layer,
        "position": edit.position,
        "generation": record_summary(generated, context.decode),
        "reference": record_summary(reference, context.decode),
        "unsteered": record_summary(unsteered, context.decode),
        "full_pass_predicted_ids": list(predicted),
        "eos_masked_ids": list(context.eos_token_ids()),
        "full_pass_without_edit_predicted_ids": list(unedited_predicted),
        "tokens_equal": predicted == generated.generated_ids,
        "logits_vs_generation": versus_generation.to_dict(),
        "logits_vs_reference_pass": versus_reference.to_dict(),
    }
    success = (
        f"the full pass predicts all {len(predicted)} generated tokens; logits bit-identical: "
        f"{versus_generation.bit_identical}, max abs diff {versus_generation.max_abs_diff:.3g}"
    )
    return verdict(ID, config, problems, success, evidence)
