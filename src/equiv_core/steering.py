"""The shared vocabulary of steering: what an edit is, when it fires, and what a generation records.

Both the nnsight arms (:mod:`equiv_core.compat`) and the independent raw-hook reference
(:mod:`equiv_core.reference`) speak this vocabulary, so their results can be compared field by field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

# When the edit fires during generation:
#   prompt     - plain invoke: once, on the prompt pass (what an intervention with no iter does);
#   step0      - only generation step 0, written with an explicit step selector (iter[0]);
#   every_step - at every generation step (iter[:N]); with the KV cache, steps after 0 see one position.
When = Literal["prompt", "step0", "every_step"]
EDIT_KINDS = ("zero",)


@dataclass(frozen=True, slots=True)
class Edit:
    """Set the hidden state output by decoder block ``layer`` at (batch 0, ``position``) to zero.

    ``position`` is used as given: ``-1`` means "last position of whatever this pass sees", which is the
    last prompt token on the prompt pass but the newest token on a cached decode step.
    """

    layer: int
    position: int
    kind: str = "zero"

    def apply(self, hidden: torch.Tensor) -> None:
        """Edit ``hidden`` ([batch, seq, hidden]) in place."""
        hidden[0, self.position] = 0.0

    def describe(self) -> str:
        return f"{self.kind} layer {self.layer} position {self.position}"


@dataclass(frozen=True, slots=True, eq=False)
class GenerationRecord:
    """What one greedy generation produced, plus what the intervention saw at each step.

    ``step_logits`` holds the next-token logits of each generated step as float32 on the CPU ([steps, vocab]).
    ``step_shapes`` and ``step_errors`` are filled only when the arm was asked to record them.
    """

    arm: str
    prompt_ids: tuple[int, ...]
    generated_ids: tuple[int, ...]
    step_logits: torch.Tensor
    step_shapes: tuple[tuple[int, ...], ...] = field(default=())
    step_errors: tuple[str | None, ...] = field(default=())


def generation_kwargs(max_new_tokens: int, pad_token_id: int | None, use_cache: bool) -> dict[str, object]:
    """Greedy decoding of exactly ``max_new_tokens`` tokens (``min_new_tokens`` stops early EOS), with logits."""
    return {
        "max_new_tokens": max_new_tokens,
        "min_new_tokens": max_new_tokens,
        "do_sample": False,
        "num_beams": 1,
        "pad_token_id": pad_token_id,
        "use_cache": use_cache,
        "output_logits": True,
        "return_dict_in_generate": True,
    }


def record_from_output(
    arm: str,
    prompt_ids: torch.Tensor,
    sequences: torch.Tensor,
    logits: tuple[torch.Tensor, ...],
    step_shapes: tuple[tuple[int, ...], ...] = (),
    step_errors: tuple[str | None, ...] = (),
) -> GenerationRecord:
    """Build a record from a ``generate`` output (``return_dict_in_generate=True, output_logits=True``)."""
    prompt_length = prompt_ids.shape[-1]
    stacked = torch.stack([step[0].detach().float().cpu() for step in logits])
    return GenerationRecord(
        arm=arm,
        prompt_ids=tuple(int(token) for token in prompt_ids[0].tolist()),
        generated_ids=tuple(int(token) for token in sequences[0, prompt_length:].tolist()),
        step_logits=stacked,
        step_shapes=step_shapes,
        step_errors=step_errors,
    )
