"""Finding 2: an edit made at generation step 0 persists through the KV cache.

Evidence: one full forward pass over prompt + generated tokens, with the same edit and no cache, predicts
the same next token at every step as generation did; its logits are compared with generation's bit for bit
and under a stated tolerance (cached and recomputed matmuls round differently, so bit-exactness is reported,
not required).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from equiv_core.comparison import LOGITS_TOLERANCE, TensorComparison, compare_tensors, steering_problems
from equiv_core.context import SteeringContext
from equiv_core.experiments.base import (
    Evidence,
    ExperimentConfig,
    FindingResult,
    GenerationSummary,
    absolute_position,
    experiment,
    ids_text,
    verdict,
)
from equiv_core.steering import Edit

ID = "kv_cache_persistence"


@dataclass(frozen=True, slots=True)
class KvCacheEvidence(Evidence):
    layer: int
    position: int
    generation: GenerationSummary
    reference: GenerationSummary
    unsteered: GenerationSummary
    full_pass_predicted_ids: tuple[int, ...]
    eos_masked_ids: tuple[int, ...]
    full_pass_without_edit_predicted_ids: tuple[int, ...]
    logits_vs_generation: TensorComparison
    logits_vs_reference_pass: TensorComparison

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "position": self.position,
            "generation": self.generation.to_dict(),
            "reference": self.reference.to_dict(),
            "unsteered": self.unsteered.to_dict(),
            "full_pass_predicted_ids": list(self.full_pass_predicted_ids),
            "eos_masked_ids": list(self.eos_masked_ids),
            "full_pass_without_edit_predicted_ids": list(self.full_pass_without_edit_predicted_ids),
            "tokens_equal": self.full_pass_predicted_ids == self.generation.generated_ids,
            "logits_vs_generation": self.logits_vs_generation.to_dict(),
            "logits_vs_reference_pass": self.logits_vs_reference_pass.to_dict(),
        }

    def lines(self) -> list[str]:
        logits = self.logits_vs_generation
        return [
            f"generation (iter[0], position {self.position}) {ids_text(self.generation.generated_ids)} "
            f"{self.generation.text!r}",
            f"full forward pass predicts   {ids_text(self.full_pass_predicted_ids)}; without the edit it predicts "
            f"{ids_text(self.full_pass_without_edit_predicted_ids)}",
            f"logits vs generation: bit-identical {logits.bit_identical}, max abs diff {logits.max_abs_diff:.3g} "
            f"(tolerance atol={logits.atol}, rtol={logits.rtol})",
        ]

    def generations(self) -> dict[str, GenerationSummary]:
        return {"generation": self.generation, "reference": self.reference, "unsteered": self.unsteered}

    def metrics(self) -> dict[str, float]:
        return {
            "logits_vs_generation.max_abs_diff": self.logits_vs_generation.max_abs_diff,
            "logits_vs_reference_pass.max_abs_diff": self.logits_vs_reference_pass.max_abs_diff,
        }


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
    evidence = KvCacheEvidence(
        config.layer,
        edit.position,
        GenerationSummary.of(generated, context.decode),
        GenerationSummary.of(reference, context.decode),
        GenerationSummary.of(unsteered, context.decode),
        predicted,
        context.eos_token_ids(),
        unedited_predicted,
        versus_generation,
        versus_reference,
    )
    success = (
        f"the full pass predicts all {len(predicted)} generated tokens; logits bit-identical: "
        f"{versus_generation.bit_identical}, max abs diff {versus_generation.max_abs_diff:.3g}"
    )
    return verdict(ID, config, problems, success, evidence)
