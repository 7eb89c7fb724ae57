"""The audit's probes of nnsight itself: known-bad ways to write a step edit (does this release raise, steer, or
silently return unsteered ids?), what runs in two step-loop patterns, and what the original study's literal
``block.output[0][index] = 0.0`` zeroes. Never used to produce a result anyone relies on; the production arms are in
:mod:`equiv_core.arms.nnsight`.
"""

from __future__ import annotations

import operator
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from equiv_core.arms.nnsight import NnsightSteering
from equiv_core.arms.nnsight_release import GRAPH_API, LOOP_ITER, NNSIGHT_VERSION, TRACE_OPTIONS, TRACER_RESULT
from equiv_core.arms.steering import Edit, NotExpressible, PassCounter, generation_kwargs


@dataclass(frozen=True, slots=True)
class LiteralEffect:
    """What ``block.output[0][index] = 0.0`` zeroed: ``zeroed`` as (batch, position) pairs of the block's
    [batch, seq, hidden] output that became all zero, or None with ``error`` (``Type: message``) when it raised."""

    index: int
    zeroed: tuple[tuple[int, int], ...] | None
    error: str | None


# Known-bad ways to write a step-0 edit: both read ``tracer.result`` before the step selector. The right
# behaviour is an error; nnsight 0.8.1 returns *unsteered* ids without one for the with-block form.
PITFALLS = {
    "result_before_iter_loop": "tracer.result read before `for step in tracer.iter[0]:`",
    "result_before_with_iter": "tracer.result read before the deprecated `with tracer.iter[0]:` block",
}
# Patterns whose danger is not the ids but what runs: code after an unbounded step loop (nnsight 0.8 never reaches
# it: shared NOTES), and a step window (an off-by-one in a window is the classic steering bug: CAA's mask).
CONTROL_PITFALLS = {
    "code_after_unbounded_iter": "code after an unbounded loop `for step in tracer.iter[:]:` (0.5: the with-block)",
    "step_window": "a step window `tracer.iter[1:3]` (0.5: the with-block; 0.4: `block.iter[1:3]`, seen at the next "
    "block), which should fire at steps 1 and 2 only",
}
STEP_WINDOW = (1, 3)


def pitfall_generate(
    steering: NnsightSteering, pitfall: str, input_ids: torch.Tensor, max_new_tokens: int, edit: Edit
) -> Any:
    """Generate with a known-bad pattern (see :data:`PITFALLS`); returns the generated ids or raises.

    Used by the version audit to see which releases reject a wrong pattern and which silently return
    unsteered ids. Never used to produce a result anyone relies on.
    """
    if pitfall not in PITFALLS:
        raise ValueError(f"unknown pitfall {pitfall!r}; valid: {', '.join(PITFALLS)}")
    if pitfall == "result_before_iter_loop" and not LOOP_ITER:
        raise NotExpressible(f"nnsight {NNSIGHT_VERSION} has no for-loop form of iter")
    if not TRACER_RESULT:  # generator.output is another pattern (and in 0.4's graph, where it is read orders nothing)
        raise NotExpressible(f"nnsight {NNSIGHT_VERSION} has no tracer.result (from 0.5.8)")
    kwargs = generation_kwargs(max_new_tokens, steering.pad_token_id, True)
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    block = steering.block(edit.layer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the with-block form is deprecated from 0.6: that is the point
        with torch.no_grad():
            with steering.wrapped.generate(**kwargs, **TRACE_OPTIONS) as tracer:
                with tracer.invoke(inputs):
                    result = tracer.result.save()
                    if pitfall == "result_before_iter_loop":
                        for _step in tracer.iter[0]:
                            edit.apply(steering.hidden(block))
                    else:
                        with tracer.iter[0]:
                            edit.apply(steering.hidden(block))
    return result.sequences[0, input_ids.shape[1] :].tolist()


def code_after_unbounded_iter(
    steering: NnsightSteering, input_ids: torch.Tensor, max_new_tokens: int, edit: Edit
) -> bool:
    """Does code written after an unbounded step loop (``for step in tracer.iter[:]``; 0.5: the with-block)
    run? The loop applies ``edit`` (an index valid at every step, e.g. -1) at each step; after it, one value is
    saved. Raises what nnsight raises; NotExpressible on 0.4, whose trace code only builds a graph (nothing of it
    runs "after the loop" while the model runs)."""
    if GRAPH_API:
        raise NotExpressible(
            f"nnsight {NNSIGHT_VERSION} builds a graph from the trace's code: no code runs after a loop"
        )
    kwargs = generation_kwargs(max_new_tokens, steering.pad_token_id, True)
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    block = steering.block(edit.layer)
    after: list[int] = []  # stays empty unless the code after the loop runs (made outside the trace: arms.nnsight)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 0.8 warns that the loop's later iterations never came: the point
        with torch.no_grad():
            with steering.wrapped.generate(**kwargs, **TRACE_OPTIONS) as tracer:
                with tracer.invoke(inputs):
                    if LOOP_ITER:
                        for _step in tracer.iter[:]:
                            edit.apply(steering.hidden(block))
                    else:
                        with tracer.iter[:]:
                            edit.apply(steering.hidden(block))
                    after.append(1)
    return bool(after)


def step_window(steering: NnsightSteering, input_ids: torch.Tensor, max_new_tokens: int, edit: Edit) -> tuple[int, ...]:
    """The generation steps (0: the prompt pass) at which the body of ``tracer.iter[1:3]`` really ran, counted
    by a plain forward pre-hook on the model (independent of nnsight's own step bookkeeping). On nnsight 0.4
    (``block.iter[1:3]``, no Python in the body at run time) the steps at which the next block received the
    edited value (``edit`` zeroes one position of batch row 0)."""
    if GRAPH_API:
        return _graph_step_window(steering, input_ids, max_new_tokens, edit)
    kwargs = generation_kwargs(max_new_tokens, steering.pad_token_id, True)
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    block = steering.block(edit.layer)
    counter = PassCounter(steering.model)
    fired: list[int] = []  # made outside the trace, appended to inside it (arms.nnsight)
    window = slice(*STEP_WINDOW)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.no_grad():
                with steering.wrapped.generate(**kwargs, **TRACE_OPTIONS) as tracer:
                    with tracer.invoke(inputs):
                        if LOOP_ITER:
                            for _step in tracer.iter[window]:
                                edit.apply(steering.hidden(block))
                                fired.append(counter.step)
                        else:
                            with tracer.iter[window]:
                                edit.apply(steering.hidden(block))
                                fired.append(counter.step)
    finally:
        counter.close()
    return tuple(int(step) for step in fired)


def _graph_step_window(
    steering: NnsightSteering, input_ids: torch.Tensor, max_new_tokens: int, edit: Edit
) -> tuple[int, ...]:
    """:func:`step_window` on nnsight 0.4: a pre-hook on block ``edit.layer + 1`` sees, per pass, whether the
    position ``edit`` zeroes arrived all zero (an exact zero vector comes only from the edit)."""
    blocks = operator.attrgetter(steering.layers_path)(steering.model)
    if edit.layer + 1 >= len(blocks):
        raise NotExpressible("the window is observed at the next decoder block; the edit is at the last one")
    zeroed: list[bool] = []

    def arrived(_module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        zeroed.append(bool((hidden[0, edit.position] == 0).all()))

    handle = blocks[edit.layer + 1].register_forward_pre_hook(arrived, with_kwargs=True)
    kwargs = generation_kwargs(max_new_tokens, steering.pad_token_id, True)
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
    block = steering.block(edit.layer)
    try:
        with torch.no_grad():
            with steering.wrapped.generate(**kwargs, **TRACE_OPTIONS) as tracer:
                with tracer.invoke(inputs):
                    with block.iter[slice(*STEP_WINDOW)]:
                        edit.apply(steering.hidden(block))
    finally:
        handle.remove()
    return tuple(step for step, was_zeroed in enumerate(zeroed) if was_zeroed)


def literal_output0_edit(steering: NnsightSteering, input_ids: torch.Tensor, layer: int, index: int) -> LiteralEffect:
    """What the original study's literal ``block.output[0][index] = 0.0`` zeroes on this version.

    On a tuple-returning block ``output[0]`` is the [batch, seq, hidden] tensor, so ``[index]`` selects a
    *batch row* (all positions); on a tensor-returning block it is batch row 0, so ``[index]`` is a position.
    Returns the (batch, position) pairs that became zero, or the error the edit raised.
    """
    block = steering.block(layer)
    try:
        with torch.no_grad():
            with steering.wrapped.trace(input_ids, **TRACE_OPTIONS):
                block.output[0][index] = 0.0
                after = steering.hidden(block).clone().save()
    except Exception as error:  # noqa: BLE001 - the error itself is the finding
        return LiteralEffect(index, None, f"{type(error).__name__}: {error}")
    hidden = torch.as_tensor(after)
    zero_rows = (hidden == 0).all(dim=-1).nonzero().tolist()
    return LiteralEffect(index, tuple((int(b), int(p)) for b, p in zero_rows), None)
