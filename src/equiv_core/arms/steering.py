"""The shared vocabulary of steering: what an edit is, when it fires, and what a generation records.

Both the nnsight arms (:mod:`equiv_core.arms.nnsight`) and the independent raw-hook reference
(:mod:`equiv_core.arms.reference`) speak this vocabulary, so their results can be compared field by field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from equiv_core.config.decoding import GREEDY, Decoding

# When the original study's edit fires during generation:
#   prompt     - plain invoke: once, on the prompt pass (what an intervention with no iter does);
#   step0      - only generation step 0, written with an explicit step selector (iter[0]);
#   every_step - at every generation step (iter[:N]); with the KV cache, steps after 0 see one position.
When = Literal["prompt", "step0", "every_step"]
WHENS: tuple[When, ...] = ("prompt", "step0", "every_step")


@dataclass(frozen=True, slots=True, order=True)
class Touch:
    """One edit of one hidden state: generation ``step``, decoder ``layer``, absolute ``position``, batch ``row``."""

    step: int
    layer: int
    position: int
    row: int = 0

    def to_list(self) -> list[int]:
        return [self.step, self.layer, self.position, self.row]


@dataclass(frozen=True, slots=True, order=True)
class PadChange:
    """A hidden state changed at a pad column of ``row`` (left padding: before the prompt; right: after it)."""

    step: int
    layer: int
    column: int
    row: int

    def to_list(self) -> list[int]:
        return [self.step, self.layer, self.column, self.row]


@dataclass(frozen=True, slots=True, order=True)
class IndexFault:
    """An index the arm's code used that the pass did not have (``kind`` "out_of_range": ``h[:, index]`` would
    raise IndexError) or that landed on a pad token of row ``row`` ("pad")."""

    step: int
    layer: int
    index: int  # as written in the arm's code
    pass_length: int  # positions the pass had
    row: int = 0
    kind: str = "out_of_range"

    def to_dict(self) -> dict[str, int | str]:
        return {
            "step": self.step,
            "layer": self.layer,
            "index": self.index,
            "pass_length": self.pass_length,
            "row": self.row,
            "kind": self.kind,
        }


@dataclass(frozen=True, slots=True, order=True)
class PassShape:
    """How many positions one steered block's pass held at a step, as the arm saw it (``h.shape[1]``)."""

    step: int
    layer: int
    length: int


class NotExpressible(RuntimeError):
    """An arm cannot express what is asked in this installation (an nnsight release without the form it needs, a
    spec the compiled floor does not take); the finding that needs it is "not expressible"."""


def check_when(when: str) -> When:
    """``when`` itself, or ValueError naming the valid ones (the nnsight arm and the hook must read it alike)."""
    if when not in WHENS:
        raise ValueError(f"unknown when {when!r}; valid: {', '.join(WHENS)}")
    return when


@dataclass(frozen=True, slots=True)
class Edit:
    """The original study's edit: set the hidden state output by decoder block ``layer`` at (batch 0,
    ``position``) to zero. Other edits (add a vector, ablate a direction, ...) are steering specs
    (:mod:`equiv_core.spec.steering_spec`).

    ``position`` is used as given: ``-1`` means "last position of whatever this pass sees", which is the
    last prompt token on the prompt pass but the newest token on a cached decode step.
    """

    layer: int
    position: int

    def apply(self, hidden: torch.Tensor) -> None:
        """Edit ``hidden`` ([batch, seq, hidden]) in place."""
        hidden[0, self.position] = 0.0

    def describe(self) -> str:
        return f"zero layer {self.layer} position {self.position}"


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


def seed_sampling(decoding: Decoding) -> None:
    """Seed torch's global generator (CPU and CUDA) for a sampled generation; greedy needs no randomness."""
    if decoding.do_sample:
        torch.manual_seed(decoding.seed)


def generation_kwargs(
    max_new_tokens: int, pad_token_id: int | None, use_cache: bool, decoding: Decoding = GREEDY
) -> dict[str, object]:
    """``generate`` keyword arguments for ``decoding``, returning per-step logits.

    Unless ``decoding.stop_at_eos``, ``min_new_tokens`` equals ``max_new_tokens``: EOS is masked, so every run has
    exactly that many steps (transformers' MinNewTokensLengthLogitsProcessor).
    """
    kwargs: dict[str, object] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": decoding.do_sample,
        "num_beams": 1,
        "pad_token_id": pad_token_id,
        "use_cache": use_cache,
        "output_logits": True,
        "return_dict_in_generate": True,
    }
    if not decoding.stop_at_eos:
        kwargs["min_new_tokens"] = max_new_tokens
    if decoding.do_sample:
        kwargs |= {"temperature": decoding.temperature, "top_k": decoding.top_k, "top_p": decoding.top_p}
    return kwargs


def records_from_output(
    arm: str,
    row_prompt_ids: tuple[tuple[int, ...], ...],
    padded_length: int,
    sequences: torch.Tensor,
    logits: tuple[torch.Tensor, ...],
    eos_ids: tuple[int, ...] = (),
) -> tuple[GenerationRecord, ...]:
    """One record per batch row from a batched ``generate`` output ([batch, padded_length + steps] sequences,
    per-step [batch, vocab] logits). With ``eos_ids``, a row ends at its first EOS (kept): the tokens after it
    are padding ``generate`` adds while other rows go on."""
    records = []
    for row, prompt_ids in enumerate(row_prompt_ids):
        generated = [int(token) for token in sequences[row, padded_length:].tolist()]
        end = next((step + 1 for step, token in enumerate(generated) if token in eos_ids), len(generated))
        stacked = torch.stack([step[row].detach().float().cpu() for step in logits[:end]])
        records.append(GenerationRecord(arm, prompt_ids, tuple(generated[:end]), stacked))
    return tuple(records)


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


def apply_op(op: str, scale: float, selected: torch.Tensor, vector: torch.Tensor | None) -> torch.Tensor:
    """A steering op applied to ``selected`` ([k, hidden], the chosen positions of one batch row); returns the
    new values ([k, hidden], same dtype). ``vector`` is the layer's steering vector ([hidden]); ``scale`` is absolute
    (a relative ``4xnorm`` is made absolute per layer by :meth:`equiv_core.arms.resolved.ResolvedSpec.scale_for`).

    This is *what* an edit does, shared by every arm; *where* and *when* each arm applies it is its own code.
    Raises ValueError for an unknown op.
    """
    if op == "zero":
        return torch.zeros_like(selected)
    if op == "scale":
        return selected * scale
    if vector is None:
        raise ValueError(f"op {op!r} needs a vector")
    if op == "add":
        return selected + scale * vector
    if op == "set":
        return vector.expand_as(selected).clone()
    if op == "ablate":
        direction = vector / vector.norm()
        ablated: torch.Tensor = selected - scale * (selected @ direction).unsqueeze(-1) * direction
        return ablated
    if op == "clamp":
        direction = vector / vector.norm()
        clamped: torch.Tensor = selected + (scale - selected @ direction).unsqueeze(-1) * direction
        return clamped
    raise ValueError(f"unknown op {op!r}")


class PassCounter:
    """Counts forward calls of a model (a plain pre-hook on it), so an arm can record at which generation step
    its edit really ran, independently of which step it believes it is at. Call :meth:`close` to remove the
    hook."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.calls = 0
        self._handle = model.register_forward_pre_hook(self._count)

    def _count(self, _module: torch.nn.Module, _args: object) -> None:
        self.calls += 1

    @property
    def step(self) -> int:
        """The generation step of the forward pass now running (0: the prompt pass)."""
        return self.calls - 1

    def close(self) -> None:
        self._handle.remove()


@dataclass(frozen=True, slots=True, eq=False)
class SpecGeneration:
    """A generation under a steering spec, with what the arm's edits touched and the indices it could not use."""

    rows: tuple[GenerationRecord, ...]  # one per batch row
    touched: frozenset[Touch]
    faults: tuple[IndexFault, ...] = ()
    passes: tuple[PassShape, ...] = ()  # the passes the arm's edits fired on, with their lengths
