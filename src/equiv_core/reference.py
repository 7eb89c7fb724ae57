"""The independent reference: the same edits done with a plain PyTorch forward hook, no nnsight involved.

Every nnsight result is checked against this. If nnsight silently did nothing (or did something else), the
two disagree and the finding fails, instead of "equivalent" being reported on evidence that cannot tell.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from equiv_core.architecture import find_decoder_layers, hidden_states_of
from equiv_core.steering import Edit, GenerationRecord, When, generation_kwargs, record_from_output


@contextmanager
def edit_hook(model: nn.Module, edit: Edit, when: When) -> Iterator[None]:
    """Apply ``edit`` to the output of block ``edit.layer`` with a forward hook, for the calls ``when`` names.

    With the KV cache, call 0 of a block during ``generate`` is the prompt pass, so ``prompt`` and ``step0``
    both mean "call 0 only"; ``every_step`` edits every call. The hook returns an edited copy rather than
    editing in place, so it does not depend on how nnsight or the block treat in-place writes.
    """
    _, layers = find_decoder_layers(model)
    calls = 0

    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        nonlocal calls
        call, calls = calls, calls + 1
        if when != "every_step" and call > 0:
            return None
        hidden = hidden_states_of(output).clone()
        edit.apply(hidden)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = layers[edit.layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def hook_generate(
    model: nn.Module,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    pad_token_id: int | None,
    edit: Edit | None,
    when: When = "prompt",
    use_cache: bool = True,
    arm: str = "hook",
) -> GenerationRecord:
    """Greedy ``generate`` with the edit applied by a raw hook (``edit=None``: unsteered generation)."""
    kwargs = generation_kwargs(max_new_tokens, pad_token_id, use_cache)
    attention_mask = torch.ones_like(input_ids)
    with torch.no_grad():
        if edit is None:
            output = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)  # type: ignore[operator]
        else:
            with edit_hook(model, edit, when):
                output = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)  # type: ignore[operator]
    return record_from_output(arm, input_ids, output.sequences, output.logits)


def hook_forward_logits(model: nn.Module, input_ids: torch.Tensor, edit: Edit | None) -> torch.Tensor:
    """Logits [seq, vocab] (float32, CPU) of one full forward pass without cache, edited by a raw hook."""
    with torch.no_grad():
        if edit is None:
            output = model(input_ids=input_ids, use_cache=False)
        else:
            with edit_hook(model, edit, "prompt"):
                output = model(input_ids=input_ids, use_cache=False)
    return torch.as_tensor(output.logits[0]).detach().float().cpu()
