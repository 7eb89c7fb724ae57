"""The ``floor`` arm: the benchmark's edit inside a compiled graph, with HF ``generate`` and a static KV cache.

What it is: the same edit as every arm (zero the output of decoder block L at the last prompt token, on the prompt
pass), written as a wrapper module around block L whose edit depends only on the pass's shape (a pass that holds
position ``p`` is the prompt pass: decode steps hold one column), so ``torch.compile`` traces it into the graph
with no Python state to guard on. The model's ``forward`` is compiled (``dynamic=False``; on CUDA
``mode="reduce-overhead"``, CUDA graphs) and generation uses a ``StaticCache`` of fixed length, so every decode
step has the same shapes and reuses one graph (transformers' static-cache and ``torch.compile`` guide). It is
checked against the raw hook like every arm; the gap from ``hook`` to ``floor`` is what eager execution costs, and
from an nnsight arm to ``floor`` what eager execution and tracing cost together.

Compilation happens on the first calls (a prefill graph and a decode graph per static-cache length; Dynamo
recompiles when a guard fails, e.g. when the deterministic-algorithms flag changes, so the benchmark runs this arm
with default kernels throughout): the seconds of every call that compiled a graph (``torch._dynamo`` counters) add
up in ``compile_seconds``, reported apart from the timings, which come after. Where it cannot compile (no C++
compiler for inductor, an unsupported model), :class:`~equiv_core.arms.steering.NotExpressible` says why, and the
benchmark reports the arm as not expressible.
"""

from __future__ import annotations

import time
import warnings
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.steering import Edit, GenerationRecord, NotExpressible, generation_kwargs, record_from_output
from equiv_core.models.architecture import find_decoder_layers, hidden_states_of, with_hidden_states

MIN_CACHE_LEN = 64


def cache_length(prompt_length: int, new_tokens: int) -> int:
    """The static cache's length: the next power of two that holds the generation, at least 64, so that the sizes
    of a sweep share one cache shape (and one compiled graph) where they fit."""
    needed = max(prompt_length + new_tokens, MIN_CACHE_LEN)
    return 1 << (needed - 1).bit_length()


def _graphs_compiled() -> int:
    from torch._dynamo.utils import counters

    return int(sum(counters["stats"].values()))


class _EditOnPromptPass(nn.Module):
    """Block ``block`` with ``edit`` (the same :class:`Edit` every arm applies) on any pass that holds its position."""

    def __init__(self, block: nn.Module, edit: Edit) -> None:
        super().__init__()
        self.block = block
        self.edit = edit

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        output = self.block(*args, **kwargs)
        hidden = hidden_states_of(output)
        if hidden.shape[1] <= self.edit.position:  # a decode step: one column, not the prompt position
            return output
        hidden = hidden.clone()
        self.edit.apply(hidden)
        return with_hidden_states(output, hidden)


@dataclass(eq=False)
class FloorState:
    """The compiled forward, the wrapped block and the static cache of one (model, layer, position, cache length)."""

    layers: nn.ModuleList
    wrapper: _EditOnPromptPass
    compiled_forward: Any
    cache: Any
    compile_seconds: float = 0.0


_STATES: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, int, int], FloorState]] = weakref.WeakKeyDictionary()


def compile_seconds(context: SteeringContext) -> float:
    """Seconds of the floor calls on this context's model that compiled a graph (0.0 before any)."""
    return sum(state.compile_seconds for state in _STATES.get(context.loaded.model, {}).values())


def floor_state(context: SteeringContext, layer: int, position: int, max_cache_len: int) -> FloorState:
    """The compiled state for this edit, made on first use and kept for the model's lifetime."""
    model = context.loaded.model
    states = _STATES.setdefault(model, {})
    key = (layer, position, max_cache_len)
    if key not in states:
        from transformers import StaticCache

        _, layers = find_decoder_layers(model)
        mode = "reduce-overhead" if context.device.type == "cuda" else None
        try:
            cache = StaticCache(config=model.config, max_cache_len=max_cache_len)
        except Exception as error:  # noqa: BLE001 - any model whose cache cannot be static
            raise NotExpressible(f"no static KV cache for this model: {type(error).__name__}: {error}") from None
        compiled = torch.compile(model.forward, dynamic=False, mode=mode)
        states[key] = FloorState(layers, _EditOnPromptPass(layers[layer], Edit(layer, position)), compiled, cache)
    return states[key]


def floor_generate(context: SteeringContext, input_ids: torch.Tensor, new_tokens: int, layer: int) -> GenerationRecord:
    """Greedy generation of ``new_tokens`` with the edit at (``layer``, last prompt token) in the compiled graph.

    Raises NotExpressible when the model cannot be compiled here (the reason in one line).
    """
    with warnings.catch_warnings():
        # torch's compiler stack warns about its own deprecated internals (torch.jit.script_method, torch 2.13)
        # while importing: nothing the caller can act on.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch(\.|$)")
        return _floor_generate(context, input_ids, new_tokens, layer)


def _floor_generate(context: SteeringContext, input_ids: torch.Tensor, new_tokens: int, layer: int) -> GenerationRecord:
    model = context.loaded.model
    position = int(input_ids.shape[1]) - 1
    state = floor_state(context, layer, position, cache_length(position + 1, new_tokens))
    kwargs = generation_kwargs(new_tokens, context.loaded.tokenizer.pad_token_id, True)
    original_block, original_forward = state.layers[layer], model.forward
    state.layers[layer] = state.wrapper
    model.forward = state.compiled_forward
    started, graphs = time.perf_counter(), _graphs_compiled()
    try:
        state.cache.reset()
        with torch.no_grad(), warnings.catch_warnings():
            # transformers 5.x renames generate's `past_key_values` to `cache`; older releases know only the former.
            warnings.filterwarnings("ignore", message=".*past_key_values.*", category=FutureWarning)
            output = model.generate(  # type: ignore[operator]
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                past_key_values=state.cache,
                **kwargs,
            )
    except Exception as error:  # noqa: BLE001 - a compiler failure is a fact about this machine, not a crash
        first = (str(error).strip().splitlines() or [""])[0][:200]
        raise NotExpressible(f"torch.compile failed here: {type(error).__name__}: {first}") from None
    finally:
        state.layers[layer] = original_block
        model.forward = original_forward
    if _graphs_compiled() != graphs:
        state.compile_seconds += time.perf_counter() - started
    return record_from_output("floor", input_ids, output.sequences, output.logits)
