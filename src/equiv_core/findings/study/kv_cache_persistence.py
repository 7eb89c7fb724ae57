"""Finding 2: an edit made at generation step 0 persists through the KV cache.

Evidence: one full forward pass over prompt + generated tokens, with the same edit and no cache, predicts
the same next token at every step as generation did; its logits are compared with generation's bit for bit
and under a tolerance measured in the same run (cached and recomputed matmuls round differently, so
bit-exactness is reported, not required): the unsteered model's own difference between its cached generation
and a full pass over the same tokens, scaled as :func:`equiv_core.findings.comparison.rounding_allowance` says (in
bfloat16 that floor alone is ~0.86 on smollm2-135m at 32 new tokens). A step whose prediction differs is accepted
only as a near-tie: its two tokens closer in the full pass than twice the rounding measured at that step. NOT
APPLICABLE with 1 new token, or when the edit moves the later steps' logits by no more than the allowance (a
persisted edit could not be told from a lost one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.steering import Edit
from equiv_core.config.catalog import ArmName
from equiv_core.findings.comparison import TensorComparison, compare_tensors, rounding_allowance, steering_problems
from equiv_core.findings.finding import (
    Evidence,
    ExperimentConfig,
    FindingResult,
    GenerationSummary,
    absolute_position,
    experiment,
    ids_text,
    not_applicable,
    verdict,
)

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
    noise_floor: float  # unsteered: cached generation vs a full pass over the same tokens (max abs logit diff)
    near_ties: tuple[int, ...]  # steps where the full pass picks another token, within the allowance

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
            "unsteered_noise_floor": self.noise_floor,
            "near_tie_steps": list(self.near_ties),
        }

    def lines(self) -> list[str]:
        logits = self.logits_vs_generation
        return [
            f"generation (iter[0], position {self.position}) {ids_text(self.generation.generated_ids)} "
            f"{self.generation.text!r}",
            f"full forward pass predicts   {ids_text(self.full_pass_predicted_ids)}; without the edit it predicts "
            f"{ids_text(self.full_pass_without_edit_predicted_ids)}",
            f"logits vs generation: bit-identical {logits.bit_identical}, max abs diff {logits.max_abs_diff:.3g} "
            f"(allowed {logits.atol:.3g}: the unsteered model's own cached-vs-full-pass difference is "
            f"{self.noise_floor:.3g})",
        ] + (
            [f"near-ties (the full pass picks the other of two tokens within rounding): steps {list(self.near_ties)}"]
            if self.near_ties
            else []
        )

    def generations(self) -> dict[str, GenerationSummary]:
        return {"generation": self.generation, "reference": self.reference, "unsteered": self.unsteered}

    def metrics(self) -> dict[str, float]:
        return {
            "logits_vs_generation.max_abs_diff": self.logits_vs_generation.max_abs_diff,
            "logits_vs_reference_pass.max_abs_diff": self.logits_vs_reference_pass.max_abs_diff,
            "unsteered_noise_floor": self.noise_floor,
        }


@experiment(ID, "a step-0 edit persists: a full forward pass with the same edit predicts what generation did")
def kv_cache_persistence(context: SteeringContext, config: ExperimentConfig) -> FindingResult:
    """Generate with an iter[0] edit, then re-run prompt + generated tokens in one pass with the same edit."""
    if config.max_new_tokens < 2:
        return not_applicable(ID, config, "needs at least 2 new tokens: with 1 the cache is never read")
    input_ids = context.encode(config.prompt)
    prompt_length = input_ids.shape[1]
    edit = Edit(config.layer, absolute_position(config.position, prompt_length))
    generated = context.nnsight.generate(input_ids, config.max_new_tokens, edit, "step0", arm=ArmName.ITER0)
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

    # The yardstick: the same comparison for unsteered generation, on its own tokens, in this run.
    unsteered_tokens = torch.tensor(
        [list(unsteered.generated_ids[:-1])], device=input_ids.device, dtype=input_ids.dtype
    )
    unsteered_sequence = torch.cat([input_ids, unsteered_tokens], dim=1)
    unsteered_full = context.reference_forward_logits(unsteered_sequence, None)[predicting]
    floor = float((unsteered_full - unsteered.step_logits).abs().max())
    allowed = rounding_allowance(
        floor, float(forward_logits.abs().max()), float(unsteered.step_logits.abs().max()), context.dtype
    )
    versus_generation = compare_tensors(forward_logits, generated.step_logits, allowed, 0.0)
    # nnsight's full pass and the hook's are the same computation: bit-identical under deterministic kernels.
    versus_reference = compare_tensors(forward_logits, reference_logits, 0.0, 0.0)
    near_ties, mispredicted = _near_ties(forward_logits, generated.step_logits, predicted, generated.generated_ids)
    # Power: after step 0 the edit acts only through the cache; if it moves those steps' logits by no more than
    # rounding, "persisted" and "lost after step 0" look the same.
    effect = float((forward_logits[1:] - unedited_logits[1:]).abs().max())

    problems = steering_problems(generated, reference, unsteered)
    if mispredicted:
        problems.append(
            f"the full forward pass predicts {list(predicted)}, generation gave "
            f"{list(generated.generated_ids)} (steps {mispredicted} are no near-ties): the step-0 edit did not "
            "persist as the cache implies"
        )
    if not versus_generation.within_tolerance:
        problems.append(
            f"full-pass logits differ from generation's by {versus_generation.max_abs_diff:.3g}, beyond the allowed "
            f"{allowed:.3g} (the unsteered model's own cached-vs-full-pass difference is {floor:.3g})"
        )
    if not versus_reference.bit_identical:
        problems.append(
            f"nnsight full-pass logits differ from the raw-hook pass by {versus_reference.max_abs_diff:.3g}: the same "
            "computation under deterministic kernels gives bit-identical logits"
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
        floor,
        tuple(near_ties),
    )
    ties = f" (steps {near_ties} are near-ties within rounding)" if near_ties else ""
    success = (
        f"the full pass predicts all {len(predicted)} generated tokens{ties}; logits bit-identical: "
        f"{versus_generation.bit_identical}, max abs diff {versus_generation.max_abs_diff:.3g} "
        f"(allowed {allowed:.3g}, unsteered floor {floor:.3g}; the edit moves later steps' logits by {effect:.3g})"
    )
    result = verdict(ID, config, problems, success, evidence)
    if result.holds and effect <= allowed:
        reason = (
            f"the edit moves the logits of steps after 0 by only {effect:.3g}, within rounding ({allowed:.3g}): a "
            "persisted edit cannot be told from one lost after the prompt pass"
        )
        return not_applicable(ID, config, reason)
    return result


def _near_ties(
    full_pass: torch.Tensor, generation: torch.Tensor, predicted: tuple[int, ...], generated: tuple[int, ...]
) -> tuple[list[int], list[int]]:
    """Steps where the full pass ([steps, vocab] logits) picks another token than generation did. A near-tie when
    the two tokens' logits in the full pass are closer than the rounding measured at that very step (twice the
    largest full-pass vs generation difference there: each of the two logits may have moved by that much); else a
    real disagreement."""
    ties: list[int] = []
    real: list[int] = []
    for step, (mine, theirs) in enumerate(zip(predicted, generated, strict=True)):
        if mine == theirs:
            continue
        gap = float(full_pass[step, mine] - full_pass[step, theirs])
        rounding = float((full_pass[step] - generation[step]).abs().max())
        (ties if abs(gap) <= 2 * rounding else real).append(step)
    return ties, real
