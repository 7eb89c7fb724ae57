"""nnsight 0.4: the arms of :mod:`equiv_core.arms.nnsight`, written for its graph API.

0.4 builds a graph of proxies from a trace's code and runs it while the model runs (shared NOTES, 2026-12-07,
checked on 0.4.11): the code sees no real values (no Python control flow on them); steps are chosen per module,
``with block.iter[k]:`` being the k-th call of that block (the pass at generation step k), and an edit with no
selector fires on the first call only (the prompt pass); a value saved inside the trace is a proxy whose ``value``
is set when the graph reaches it (``ValueError`` "Accessing value before it's been set" where generation stopped
first); an out-of-range index raises ``NNsightError`` (an ``Exception``, not an ``IndexError``) and ends the whole
generation; a trace with several invokes cannot read ``generator.output``. So these arms write one
``with block.iter[k]:`` per step, compute each pass's indices from the length the pass is expected to have (the
padded prompt length at step 0, then 1 with the KV cache; ``L + k`` without), save the shape nnsight handed each
edit, and get the steps at which an index is out of range from one generation per step. What the arms touched is
judged by observation (:mod:`equiv_core.observe`), as on every release.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from equiv_core.arms.nnsight_release import NNSIGHT_VERSION, TRACE_OPTIONS, SpecStyle
from equiv_core.arms.resolved import ResolvedSpec
from equiv_core.arms.spec_edits import logged_edits, pass_offset, row_edits
from equiv_core.arms.steering import (
    Edit,
    GenerationRecord,
    IndexFault,
    NotExpressible,
    PassShape,
    SpecGeneration,
    Touch,
    When,
    apply_op,
    generation_kwargs,
    record_from_output,
    records_from_output,
    seed_sampling,
)


class NnsightSteering(Protocol):
    """What these arms use of :class:`equiv_core.arms.nnsight.NnsightSteering`."""

    wrapped: Any
    pad_token_id: int | None

    def block(self, layer: int) -> Any: ...

    def hidden(self, block: Any) -> Any: ...


def _saved_shape(proxy: Any) -> tuple[int, ...] | None:
    """The value of a shape saved inside a 0.4 trace, or None where the graph never reached it (generation ended
    before that step)."""
    try:
        return tuple(int(size) for size in proxy.value)
    except ValueError:  # "Accessing value before it's been set"
        return None


def _index_error(error: Exception, index: int) -> str | None:
    """The ``IndexError: ...`` line of an nnsight 0.4 ``NNsightError`` raised by the out-of-range ``index`` (its
    ``traceback_content`` holds the original traceback; torch says "index 3 is out of bounds for dimension 1 with
    size 1"), else None."""
    lines = (getattr(error, "traceback_content", None) or "").strip().splitlines()
    last = lines[-1] if lines else ""
    return last if last.startswith(f"IndexError: index {index} is out of bounds") else None


def _generation(
    steering: NnsightSteering,
    inputs: dict[str, torch.Tensor],
    kwargs: dict[str, object],
    edit: Edit,
    when: When,
    steps: range,
    edited: frozenset[int],
) -> tuple[Any, tuple[tuple[int, ...] | None, ...]]:
    """One generation with ``edit`` on block ``edit.layer`` at the steps of ``edited``: with no selector for
    ``when="prompt"`` (the first call: the prompt pass), else one ``with block.iter[k]:`` per step of ``steps``.
    Returns the ``generate`` output (``sequences`` [batch, prompt + new tokens], ``logits`` one [batch, vocab] per
    step) and, per step of ``steps``, the shape of the [batch, seq, hidden] tensor nnsight handed the edit (None
    where generation ended first). Raises what nnsight raises."""
    block = steering.block(edit.layer)
    saved: list[Any] = []  # made outside the trace, appended to inside it (arms.nnsight)
    with torch.no_grad():
        with steering.wrapped.generate(**kwargs, **TRACE_OPTIONS) as tracer:
            with tracer.invoke(inputs):
                if when == "prompt":
                    hidden = steering.hidden(block)
                    saved.append(hidden.shape.save())
                    if 0 in edited:
                        edit.apply(hidden)
                else:
                    for step in steps:
                        with block.iter[step]:
                            hidden = steering.hidden(block)
                            saved.append(hidden.shape.save())
                            if step in edited:
                                edit.apply(hidden)
                output = steering.wrapped.generator.output.save()
    return output, tuple(_saved_shape(shape) for shape in saved)


def graph_generate(
    steering: NnsightSteering,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    edit: Edit,
    when: When,
    use_cache: bool,
    catch_index_errors: bool,
    arm: str,
) -> GenerationRecord:
    """:meth:`NnsightSteering.generate` on nnsight 0.4: ``prompt`` with no selector, ``step0`` as
    ``block.iter[0]``, ``every_step`` as ``block.iter[k]`` at each step k. With ``catch_index_errors`` each step's
    edit first runs in a generation of its own (0.4 ends a generation at the first out-of-range index), then one
    generation edits at the steps where the index exists. Raises ``IndexError`` for an out-of-range index
    otherwise."""
    kwargs = generation_kwargs(max_new_tokens, steering.pad_token_id, use_cache)
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    steps = range(1) if when in ("prompt", "step0") else range(max_new_tokens)
    errors: tuple[str | None, ...] = (None,) * len(steps)
    if catch_index_errors:
        found: list[str | None] = []
        for step in steps:
            try:
                _generation(steering, inputs, kwargs, edit, when, steps, frozenset({step}))
                found.append(None)
            except Exception as error:  # NNsightError: only the edit's own index error is recorded
                line = _index_error(error, edit.position)
                if line is None:
                    raise
                found.append(line.removeprefix("IndexError: "))
        errors = tuple(found)
    edited = frozenset(step for step, error in zip(steps, errors, strict=True) if error is None)
    try:
        output, shapes = _generation(steering, inputs, kwargs, edit, when, steps, edited)
    except Exception as error:
        line = _index_error(error, edit.position)
        if line is None:
            raise
        raise IndexError(line) from error
    seen = tuple(shape for shape in shapes if shape is not None)
    return record_from_output(arm, input_ids, output.sequences, output.logits, seen, errors[: len(seen)])


def graph_generate_spec(
    steering: NnsightSteering, resolved: ResolvedSpec, style: SpecStyle, per_invoke: bool
) -> SpecGeneration:
    """:meth:`NnsightSteering.generate_spec` on nnsight 0.4: every steered block at every step of the window, each
    in its own ``with block.iter[k]:`` (no selector for the prompt pass), the indices computed from the pass length
    expected at step k. The pass lengths recorded are the ones nnsight handed the edits.

    Raises NotExpressible for a site other than a block's output, for one invoke per prompt (0.4 cannot read the
    generated ids of such a trace) and for a
    spec that leaves every value unchanged: its touches are judged from what the arm recorded, and a 0.4 arm can
    record only the step it chose, not the one that ran."""
    if per_invoke:
        raise NotExpressible(
            f"nnsight {NNSIGHT_VERSION} cannot read the generated ids of a trace with several invokes "
            "(generator.output: 'Accessing value before it's been set')"
        )
    if resolved.batch.prefix_length:
        raise NotExpressible(
            f"the arms for nnsight {NNSIGHT_VERSION} (a graph API) do not continue from a cached prefix (--prefix)"
        )
    if not resolved.spec.site.is_default:
        raise NotExpressible(
            f"the arms for nnsight {NNSIGHT_VERSION} (a graph API) steer a block's output only; --site "
            f"{resolved.spec.site.describe()} is written for nnsight 0.5 and later"
        )
    if resolved.spec.is_identity:
        raise NotExpressible(
            f"nnsight {NNSIGHT_VERSION} runs the trace's code before the model (a graph): the arm cannot record the "
            "step its edit really ran at, and an edit that leaves every value unchanged cannot be observed"
        )
    batch = resolved.batch
    cached = style != "recompute"
    new_tokens = resolved.new_tokens
    kwargs = generation_kwargs(new_tokens, steering.pad_token_id, cached, resolved.decoding)
    window = range(new_tokens) if style == "recompute" else resolved.steps.fired(new_tokens)
    literal = style == "iter" and resolved.spec.indexing == "literal"
    prompt_pass = style == "plain" or (style == "iter" and resolved.steps.kind == "prompt-pass")
    steps = range(1) if prompt_pass else window
    padded_length = batch.padded_length
    log: list[Touch | IndexFault] = []  # row_edits' log, made outside the trace (arms.nnsight)
    saved: list[tuple[int, int, Any]] = []  # (step, layer, the shape nnsight handed the edit)
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    seed_sampling(resolved.decoding)
    with torch.no_grad():
        with steering.wrapped.generate(**kwargs, **TRACE_OPTIONS) as tracer:
            with tracer.invoke(inputs):
                for step in steps:
                    length = padded_length + step if not cached else (padded_length if step == 0 else 1)
                    offset = pass_offset(step, padded_length, cached)
                    for layer in resolved.layers:
                        plans = [
                            (row, row_edits(resolved, row, layer, length, offset, offset, step, literal, log))
                            for row in range(batch.size)
                        ]
                        block = steering.block(layer)
                        if prompt_pass:  # no selector: the first call of the block, the prompt pass
                            _edit_rows(steering, block, resolved, layer, step, plans, saved)
                        else:
                            with block.iter[step]:
                                _edit_rows(steering, block, resolved, layer, step, plans, saved)
                output = steering.wrapped.generator.output.save()
    passes = [(step, layer, _saved_shape(shape)) for step, layer, shape in saved]
    ran = {step for step, _layer, shape in passes if shape is not None}  # generation may end before a chosen step
    eos = resolved.eos_ids if resolved.decoding.stop_at_eos else ()
    prompts = tuple(batch.row_ids(row) for row in range(batch.size))
    records = records_from_output(style, prompts, padded_length, output.sequences, output.logits, eos)
    touched, faults = logged_edits([entry for entry in log if entry.step in ran])
    shapes = tuple(PassShape(step, layer, shape[1]) for step, layer, shape in passes if shape is not None)
    return SpecGeneration(records, touched, faults, shapes)


def _edit_rows(
    steering: NnsightSteering,
    block: Any,
    resolved: ResolvedSpec,
    layer: int,
    step: int,
    plans: list[tuple[int, list[int]]],
    saved: list[tuple[int, int, Any]],
) -> None:
    """Inside a trace: save the shape of ``block``'s [batch, seq, hidden] output at ``step`` into ``saved``, then
    apply the spec's op at ``plans`` (per batch row, the indices into this pass)."""
    hidden = steering.hidden(block)
    saved.append((step, layer, hidden.shape.save()))
    vector = resolved.vector_for(layer)
    for row, indices in plans:
        if indices:
            hidden[row, indices] = apply_op(resolved.op, resolved.scale_for(layer), hidden[row, indices], vector)
