"""The independent reference: the same edits done with a plain PyTorch forward hook, no nnsight involved.

Every nnsight result is checked against this. If nnsight silently did nothing (or did something else), the
two disagree and the finding fails, instead of "equivalent" being reported on evidence that cannot tell.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from equiv_core.arms.prefix import prefix_kwargs
from equiv_core.arms.resolved import ResolvedSpec
from equiv_core.arms.steering import (
    Edit,
    GenerationRecord,
    PassShape,
    SpecGeneration,
    Touch,
    When,
    apply_op,
    check_when,
    generation_kwargs,
    record_from_output,
    records_from_output,
    seed_sampling,
)
from equiv_core.config.catalog import ArmName
from equiv_core.models.architecture import (
    find_decoder_layers,
    hidden_states_of,
    with_hidden_states,
)
from equiv_core.models.sites import SiteEdit, SiteModule, site_hooks


@contextmanager
def edit_hook(model: nn.Module, edit: Edit, when: When) -> Iterator[None]:
    """Apply ``edit`` to the output of block ``edit.layer`` with a forward hook, for the calls ``when`` names.

    With the KV cache, call 0 of a block during ``generate`` is the prompt pass, so ``prompt`` and ``step0``
    both mean "call 0 only"; ``every_step`` edits every call. The hook returns an edited copy rather than
    editing in place, so it does not depend on how nnsight or the block treat in-place writes.
    """
    when = check_when(when)
    _, layers = find_decoder_layers(model)
    calls = 0

    def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
        nonlocal calls
        call, calls = calls, calls + 1
        if when != "every_step" and call > 0:
            return None
        hidden = hidden_states_of(output).clone()
        edit.apply(hidden)
        return with_hidden_states(output, hidden)

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
    arm: str = ArmName.HOOK,
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


@contextmanager
def spec_hooks(
    model: nn.Module, resolved: ResolvedSpec, cached: bool, touched: list[Touch], passes: list[PassShape]
) -> Iterator[None]:
    """Apply a steering spec's intent with one plain hook per steered layer's site (a forward hook on the module
    whose output it is, a forward pre-hook on the module whose input it is: :func:`equiv_core.models.sites.site_hooks`,
    which refuses a tensor that is not [batch, seq, width]),
    appending each edit to ``touched`` and each call's pass length to ``passes``. Each hook edits the site's tensor
    ([batch, seq, width]; at a head site only the heads' columns) in a copy it returns.

    Independent of the nnsight arms' translation: each hook counts its own calls (the generation step) and the
    columns it has seen (with the KV cache a call's columns start where the previous call's ended; without it, at
    0), and finds each row's prompt tokens from the attention mask (its real tokens, in order); generated tokens
    follow the padded prompt. It edits every intended position its pass holds: the intent at every step,
    whatever selector the spec is written with.
    """
    mask = resolved.batch.attention_mask.cpu()
    padded_length = int(mask.shape[1])
    prompt_columns = [torch.nonzero(mask[row]).flatten().tolist() for row in range(mask.shape[0])]
    wanted: list[list[tuple[int, int]]] = []  # per row: (column, position)
    for row, positions in enumerate(resolved.positions):
        prompt = prompt_columns[row]
        wanted.append(
            [(prompt[p] if p < len(prompt) else padded_length + p - len(prompt), p) for p in sorted(positions)]
        )
    edits: list[tuple[SiteModule, SiteEdit]] = []
    for layer in resolved.layers:
        site = resolved.site_for(layer)
        # With the KV cache, the first pass starts after a cached prefix (a hook counting from 0 would be off by it).
        state = {"calls": 0, "seen": resolved.batch.prefix_length if cached else 0}
        vector = resolved.vector_for(layer)
        scale = resolved.scale_for(layer)
        columns = None if site.columns is None else list(site.columns)

        def edit(
            hidden: torch.Tensor,
            layer: int = layer,
            state: dict[str, int] = state,
            vector: torch.Tensor | None = vector,
            scale: float = scale,
            columns: list[int] | None = columns,
        ) -> torch.Tensor | None:
            length = int(hidden.shape[1])
            start = state["seen"] if cached else 0
            step = state["calls"]
            state["calls"] += 1
            state["seen"] += length
            passes.append(PassShape(step, layer, length))
            edited = None
            for row, targets in enumerate(wanted):
                local = [(column - start, position) for column, position in targets if start <= column < start + length]
                if not local:
                    continue
                if edited is None:
                    edited = hidden.clone()
                indices = [index for index, _position in local]
                selected = edited[row, indices]  # [k, width]
                if columns is None:
                    selected = apply_op(resolved.op, scale, selected, vector)
                else:
                    selected[:, columns] = apply_op(resolved.op, scale, selected[:, columns], vector)
                edited[row, indices] = selected
                touched.extend(Touch(step, layer, position, row) for _index, position in local)
            return edited

        edits.append((site, edit))
    with site_hooks(model, edits):
        yield


def spec_hook_generate(
    model: nn.Module, pad_token_id: int | None, resolved: ResolvedSpec, cached: bool, steer: bool = True
) -> SpecGeneration:
    """``generate`` of ``resolved.new_tokens`` tokens for ``resolved.batch`` (its real attention mask) with the
    spec's intent applied by raw hooks, or with no edit (``steer`` False: the unsteered arms)."""
    touched: list[Touch] = []
    passes: list[PassShape] = []
    batch, decoding = resolved.batch, resolved.decoding
    kwargs = generation_kwargs(resolved.new_tokens, pad_token_id, cached, decoding)
    kwargs |= prefix_kwargs(resolved.prefix_cache, cached)
    seed_sampling(decoding)
    with torch.no_grad(), spec_hooks(model, resolved, cached, touched, passes) if steer else nullcontext():
        output = model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **kwargs)  # type: ignore[operator]
    name = (
        (ArmName.HOOK if steer else ArmName.UNSTEERED)
        if cached
        else (ArmName.HOOK_RECOMPUTE if steer else ArmName.UNSTEERED_RECOMPUTE)
    )
    prompts = tuple(batch.row_ids(row) for row in range(batch.size))
    eos = resolved.eos_ids if decoding.stop_at_eos else ()
    rows = records_from_output(name, prompts, batch.padded_length, output.sequences, output.logits, eos)
    return SpecGeneration(rows, frozenset(touched), (), tuple(passes))
