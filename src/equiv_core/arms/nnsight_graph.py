"""nnsight 0.4: the arms of :mod:`equiv_core.arms.nnsight`, written for its graph API.

0.4 builds a graph of proxies from a trace's code and runs it while the model runs (shared NOTES, 2026-12-07,
checked on 0.4.11): the code has no real values (no shapes, no Python control flow on them); steps are chosen per
module, ``with block.iter[k]:`` being the k-th call of that block (the pass at generation step k), and an edit with
no selector fires on the first call only (the prompt pass); an out-of-range index raises ``NNsightError`` (an
``Exception``, not an ``IndexError``) and ends the whole generation; a trace with several invokes cannot read
``generator.output``. So here each pass's length is computed ahead (the padded prompt length at step 0, then 1 with
the KV cache; ``L + k`` without), the shapes a block really produced are recorded by a plain forward hook on it, and
the steps at which an index is out of range come from one generation per step. What the arms touched is judged
by observation (:mod:`equiv_core.observe`), as on every release.
"""

from __future__ import annotations

import operator
from typing import Any, Protocol

import torch

from equiv_core.arms.nnsight_release import TRACE_OPTIONS, SpecStyle
from equiv_core.arms.resolved import ResolvedSpec
from equiv_core.arms.spec_edits import logged_edits, pass_offset, row_edits
from equiv_core.arms.steering import (
    Edit,
    GenerationRecord,
    NotExpressible,
    PassShape,
    SpecGeneration,
    When,
    apply_op,
    generation_kwargs,
    record_from_output,
    records_from_output,
    seed_sampling,
)
from equiv_core.models.architecture import BlockOutputForm


class NnsightSteering(Protocol):
    """What these arms use of :class:`equiv_core.arms.nnsight.NnsightSteering`."""

    model: torch.nn.Module
    wrapped: Any
    layers_path: str
    block_output_form: BlockOutputForm
    pad_token_id: int | None

    def block(self, layer: int) -> Any: ...

    def hidden(self, block: Any) -> Any: ...


class BlockShapes:
    """A plain forward hook on a decoder block: the shape of the [batch, seq, hidden] hidden states it output at
    each call, in call order (one call per forward pass). Call :meth:`close` to remove it."""

    def __init__(self, module: torch.nn.Module, form: BlockOutputForm) -> None:
        self.form = form
        self.shapes: list[tuple[int, ...]] = []
        self._handle = module.register_forward_hook(self._record)

    def _record(self, _module: torch.nn.Module, _args: object, output: Any) -> None:
        hidden = output[0] if self.form == "tuple" else output
        self.shapes.append(tuple(hidden.shape))

    def close(self) -> None:
        self._handle.remove()


def _module(steering: NnsightSteering, layer: int) -> torch.nn.Module:
    block: torch.nn.Module = operator.attrgetter(steering.layers_path)(steering.model)[layer]
    return block


def _index_error(error: Exception) -> str | None:
    """The ``IndexError: ...`` line of an nnsight 0.4 ``NNsightError`` raised by an out-of-range index, else None
    (its ``traceback_content`` holds the original exception's traceback)."""
    lines = (getattr(error, "traceback_content", None) or "").strip().splitlines()
    last = lines[-1] if lines else ""
    return last if last.startswith("IndexError") else None


def _generation(
    steering: NnsightSteering, inputs: dict[str, torch.Tensor], kwargs: dict[str, object], edit: Edit, steps: Any
) -> Any:
    """One generation with ``edit`` on block ``edit.layer``: with no selector where ``steps`` is None (the prompt
    pass), else at each step of ``steps`` (a range: one ``block.iter[a:b]``, or a tuple: one ``block.iter[k]``
    each). Returns the ``generate`` output; raises what nnsight raises."""
    block = steering.block(edit.layer)
    with torch.no_grad():
        with steering.wrapped.generate(**kwargs, **TRACE_OPTIONS) as tracer:
            with tracer.invoke(inputs):
                if steps is None:
                    edit.apply(steering.hidden(block))
                elif isinstance(steps, range):
                    with block.iter[steps.start : steps.stop]:
                        edit.apply(steering.hidden(block))
                else:
                    for step in steps:
                        with block.iter[step]:
                            edit.apply(steering.hidden(block))
                output = steering.wrapped.generator.output.save()
    return output


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
    ``block.iter[0]``, ``every_step`` as ``block.iter[0:N]``. With ``catch_index_errors`` each step first runs in a
    generation of its own (0.4 ends a generation at the first out-of-range index), then one generation edits at
    the steps where the index exists. Raises ``IndexError`` for an out-of-range index otherwise."""
    kwargs = generation_kwargs(max_new_tokens, steering.pad_token_id, use_cache)
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    window = range(1) if when in ("prompt", "step0") else range(max_new_tokens)
    errors: tuple[str | None, ...] = (None,) * len(window)
    if catch_index_errors:
        found: list[str | None] = []
        for step in window:
            try:
                _generation(steering, inputs, kwargs, edit, (step,))
                found.append(None)
            except Exception as error:  # noqa: BLE001 - NNsightError; only an index error is recorded
                line = _index_error(error)
                if line is None:
                    raise
                found.append(line.removeprefix("IndexError: "))
        errors = tuple(found)
    steps: Any = None if when == "prompt" else window
    if catch_index_errors:
        steps = tuple(step for step, error in zip(window, errors, strict=True) if error is None)
    recorder = BlockShapes(_module(steering, edit.layer), steering.block_output_form)
    try:
        output = _generation(steering, inputs, kwargs, edit, steps)
    except Exception as error:
        line = _index_error(error)
        if line is None:
            raise
        raise IndexError(line) from error
    finally:
        recorder.close()
    shapes = tuple(recorder.shapes[step] for step in window)
    return record_from_output(arm, input_ids, output.sequences, output.logits, shapes, errors)


def graph_generate_spec(
    steering: NnsightSteering, resolved: ResolvedSpec, style: SpecStyle, per_invoke: bool
) -> SpecGeneration:
    """:meth:`NnsightSteering.generate_spec` on nnsight 0.4: every steered block at every step of the window, each
    in its own ``with block.iter[k]:``, the indices computed from the pass length expected at step k (what the
    arm believes; observation judges what it touched). The pass lengths recorded are the ones the blocks really
    produced. One invoke per prompt is not expressible (0.4 cannot read the generated ids of such a trace)."""
    if per_invoke:
        raise NotExpressible(
            "nnsight 0.4 cannot read the generated ids of a trace with several invokes "
            "(generator.output: 'Accessing value before it's been set')"
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
    log: list[Any] = []
    recorders = {layer: BlockShapes(_module(steering, layer), steering.block_output_form) for layer in resolved.layers}
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
    seed_sampling(resolved.decoding)
    try:
        with torch.no_grad():
            with steering.wrapped.generate(**kwargs, **TRACE_OPTIONS) as tracer:
                with tracer.invoke(inputs):
                    for step in steps:
                        length = padded_length + step if not cached else (padded_length if step == 0 else 1)
                        offset = pass_offset(step, padded_length, cached)
                        for layer in resolved.layers:
                            block = steering.block(layer)
                            plans = [
                                (row, row_edits(resolved, row, layer, length, offset, offset, step, literal, log))
                                for row in range(batch.size)
                            ]
                            if not any(indices for _row, indices in plans):
                                continue
                            if prompt_pass:  # no selector: the first call of the block, the prompt pass
                                _edit_rows(steering, block, resolved, layer, plans)
                            else:
                                with block.iter[step]:
                                    _edit_rows(steering, block, resolved, layer, plans)
                    output = steering.wrapped.generator.output.save()
    finally:
        for recorder in recorders.values():
            recorder.close()
    ran = min(len(recorder.shapes) for recorder in recorders.values())  # passes the generation made
    log = [entry for entry in log if entry[0] < ran]  # a step chosen ahead that generation never reached: no edit
    eos = resolved.eos_ids if resolved.decoding.stop_at_eos else ()
    prompts = tuple(batch.row_ids(row) for row in range(batch.size))
    records = records_from_output(style, prompts, padded_length, output.sequences, output.logits, eos)
    touched, faults = logged_edits(log)
    passes = tuple(
        PassShape(step, layer, int(recorder.shapes[step][1]))
        for step in steps
        for layer, recorder in recorders.items()
        if step < ran
    )
    return SpecGeneration(records, touched, faults, passes)


def _edit_rows(
    steering: NnsightSteering, block: Any, resolved: ResolvedSpec, layer: int, plans: list[tuple[int, list[int]]]
) -> None:
    """Inside a trace: apply the spec's op at ``plans`` (per batch row, the indices into this pass)."""
    hidden = steering.hidden(block)
    vector = resolved.vector_for(layer)
    for row, indices in plans:
        if indices:
            hidden[row, indices] = apply_op(resolved.op, resolved.scale, hidden[row, indices], vector)
