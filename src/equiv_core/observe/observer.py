"""The block observer: which (step, layer, column, row) a generation's decoder blocks did not compute themselves.

During the generation, on every decoder block, a forward hook (with kwargs) keeps the arguments the block's
``forward`` got, after every pre-hook whoever registered it (the hidden states [batch, seq, hidden] among them),
and a pre-hook that runs before all others keeps the state of the block's own layer of the KV cache before the
pass and the autocast state; the module after the last block (the final norm, found by a probe) is read the same
way. After
the generation each block's class ``forward`` runs again on exactly what it received, with every hook suspended,
and its result is compared bit for bit with what the next block (or the final norm) received in that pass. A
difference is a *change* of that block: an edit of its output, of anything inside it (attention, MLP, one head),
or of the next block's input. Propagation is not reported: block L+1 is replayed on the input it really got.

Why not a forward hook on the block's output: nnsight 0.8 edits a block's output inside its ``forward`` (its
controller replaces the module's ``forward``), so any hook already sees the edit (../shared/NOTES.md, measured
2026-12-06 on nnsight 0.8.1). Why the cache is copied per layer: transformers 5.24 passes the cache to the block
as ``cache`` and the block appends to it; replaying on the live cache would append twice.

Exactness: the replay is the same computation on the same inputs with the same shapes, so on deterministic
kernels an unsteered generation gives no change at all (tests/test_observer.py checks it on every tiny model).
What observation cannot see: an edit that writes the value already there; an edit of block 0's input (the
embeddings: nothing before block 0 is replayed); a change of dtype that keeps the values.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from equiv_core.arms.steering import PassShape
from equiv_core.models.architecture import find_decoder_layers, forward_with_hooks, hidden_states_of
from equiv_core.observe.hooks import suspended_hooks

try:  # transformers' KV cache base class (4.36+); without it, no argument is treated as a cache
    from transformers.cache_utils import Cache as _Cache
except ImportError:  # pragma: no cover - every supported transformers has it
    _Cache = ()  # type: ignore[assignment,misc]

# Cache layers whose ``update`` rebinds ``keys`` / ``values`` instead of writing into them, so a shallow copy taken
# before a pass keeps the state before it (transformers 5.x DynamicLayer, DynamicSlidingWindowLayer).
_REBINDING_LAYERS = ("DynamicLayer", "DynamicSlidingWindowLayer")


class ObserverRemoved(RuntimeError):
    """The observed code removed the observer's hooks while it ran (it deletes hooks it did not register: pyvene
    0.1.8's ``generate`` pops every forward hook and pre-hook of the model, intervenable_base.py:2091)."""


class ObservationError(RuntimeError):
    """The generation did not run the blocks the way observation relies on (a block's output never reached the
    next block, a pass whose replay has another shape); the message says which block and pass."""


@dataclass(frozen=True, slots=True, order=True)
class Change:
    """One hidden state a block did not compute itself: forward pass ``step`` (0: the prefill), decoder ``layer``,
    padded ``column`` of the sequence (the cache's columns; without the cache, the pass's own), batch ``row``."""

    step: int
    layer: int
    column: int
    row: int


@dataclass(frozen=True, slots=True)
class Observation:
    """What one observed generation's blocks changed.

    ``passes``: every block's every forward pass with its length (positions held); ``largest``: the largest
    absolute change of any hidden state (0.0 when nothing changed); ``receiver``: where the last block's output was
    read; ``step_logits``: what the model returned at each forward pass, its last column (the next-token logits
    ``generate`` chooses from), on the CPU.
    """

    changes: frozenset[Change]
    passes: tuple[PassShape, ...]
    largest: float
    receiver: str
    step_logits: tuple[torch.Tensor, ...]  # per model forward pass: the last column's logits [batch, vocab], float32
    setup_passes: int = 0  # passes before the generation's, left out (a function computing its vector first)
    held_bytes: int = 0  # what the observer kept alive until the replay: inputs, cache-layer copies, outputs seen

    @property
    def steps(self) -> int:
        """Forward passes of block 0 (the generation's steps, for ``generate`` with or without the cache)."""
        return sum(1 for shape in self.passes if shape.layer == 0)


@dataclass(slots=True)
class _Call:
    """One block call as received: its arguments, the hidden states among them and its cache layer before it."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    hidden: torch.Tensor
    offset: int  # columns already in this layer's cache
    cache_slot: tuple[str, int | str] | None = None  # ("arg", i) or ("kwarg", name) of the cache argument
    cache_before: Any = None
    autocast: torch.dtype | None = None  # the autocast dtype the block ran under (None: autocast off)

    def replay_arguments(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The call's arguments with the cache replaced by the copy taken before the pass."""
        args, kwargs = self.args, dict(self.kwargs)
        if self.cache_slot is not None:
            kind, where = self.cache_slot
            if kind == "arg":
                args = tuple(self.cache_before if index == where else value for index, value in enumerate(args))
            else:
                kwargs[str(where)] = self.cache_before
        return args, kwargs


@dataclass(slots=True)
class _Trace:
    calls: list[list[_Call]]  # per layer, per pass
    received: list[list[torch.Tensor]]  # per layer, per pass: what the next module received
    logits: list[torch.Tensor] = field(default_factory=list)  # per model pass: [batch, vocab] of the last column


def _hidden_argument(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    hidden = args[0] if args else kwargs.get("hidden_states")
    if not isinstance(hidden, torch.Tensor):
        raise ObservationError(f"a decoder block received {type(hidden).__name__} where hidden states were expected")
    return hidden


def _autocast_state(device_type: str) -> torch.dtype | None:
    """The autocast dtype in force for ``device_type`` (None: off): a replay must run under the same."""
    try:
        return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    except (RuntimeError, TypeError):  # a device type autocast does not know
        return None


def _find_cache(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[str, int | str], Any] | None:
    for index, value in enumerate(args):
        if isinstance(value, _Cache):
            return ("arg", index), value
    for name, value in kwargs.items():
        if isinstance(value, _Cache):
            return ("kwarg", name), value
    return None


def _layer_state(cache: Any, layer: int) -> tuple[Any, int | None]:
    """A copy of ``cache`` whose layer ``layer`` is that layer's state now (other layers shared: the replay of block
    ``layer`` touches only its own), and that layer's length in columns (None for a layer that keeps a recurrent
    state and no columns: transformers 5.x ``LinearAttentionLayer``, Mamba's)."""
    layers = getattr(cache, "layers", None)
    if isinstance(layers, list) and layer < len(layers):
        state = layers[layer]
        kept = copy.copy(state) if type(state).__name__ in _REBINDING_LAYERS else copy.deepcopy(state)
        replay = copy.copy(cache)
        replay.layers = list(layers)
        replay.layers[layer] = kept
        length = getattr(state, "get_seq_length", None)
        return replay, int(length()) if callable(length) else None
    # A layer not created yet (a cache that grows its list lazily) or another cache layout: copy all of it.
    length = int(cache.get_seq_length(layer)) if hasattr(cache, "get_seq_length") else 0
    return copy.deepcopy(cache), length


def final_receiver(model: nn.Module, blocks: nn.ModuleList, probe_ids: torch.Tensor) -> tuple[str, nn.Module] | None:
    """The module that receives the last block's hidden states (the final norm on every model tried), found by one
    probe forward pass of ``probe_ids`` ([1, n]); None when no module receives that very tensor."""
    last = blocks[-1]
    inside = {id(module) for block in blocks for module in block.modules()}
    produced: list[torch.Tensor] = []
    found: list[tuple[str, nn.Module]] = []

    def keep(_module: nn.Module, _args: Any, output: Any) -> None:
        produced.append(hidden_states_of(output))

    def match(name: str) -> Callable[..., None]:
        def check(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            received = args[0] if args else kwargs.get("hidden_states")
            if produced and not found and received is produced[-1]:
                found.append((name, module))

        return check

    handles = [last.register_forward_hook(keep)]
    handles += [
        module.register_forward_pre_hook(match(name), with_kwargs=True)
        for name, module in model.named_modules()
        if id(module) not in inside and module is not model
    ]
    forward_with_hooks(model, probe_ids, handles)
    return found[0] if found else None


class BlockObserver:
    """Observes the decoder blocks of ``model`` during :meth:`watching`; :meth:`observation` replays and compares.

    Build it before the steering under test is entered: it keeps each block's class ``forward`` and the module
    objects as they are now, so a steering library that patches a class or swaps a block for a wrapper is still
    seen from outside.
    """

    def __init__(self, model: nn.Module, probe_ids: torch.Tensor) -> None:
        self.model = model
        _path, blocks = find_decoder_layers(model)
        self.blocks: tuple[nn.Module, ...] = tuple(blocks)
        self.forwards: tuple[Callable[..., Any], ...] = tuple(type(block).forward for block in self.blocks)
        found = final_receiver(model, blocks, probe_ids)
        self.receiver_name = f"{found[0]}'s input" if found else "the last block's forward hook"
        self.receiver = found[1] if found else None
        self._trace = _Trace([[] for _ in self.blocks], [[] for _ in self.blocks])
        self._pending: list[_Call | None] = [None] * len(self.blocks)
        self._begun = 0  # forward passes block 0 has begun in the current watching (finished or not)
        self._kept = 0
        self._columns = [0] * len(self.blocks)  # per block: columns run on with a cache in the current watching
        self._removed_by_code = False  # the code watched last removed an observer hook

    @contextmanager
    def watching(self, first_column: int = 0) -> Iterator[BlockObserver]:
        """Record every block call inside the block (what the blocks received; nothing is edited).
        ``first_column``: where the first pass starts in a cache that keeps no columns (a recurrent state) when the
        generation continues from a prefilled prefix of that many tokens.

        Per block, a pre-hook that runs before any other keeps the state of the block's cache layer before the pass
        (and the autocast state the block runs under); a forward hook keeps the arguments the block's ``forward``
        actually got, after every pre-hook, whoever registered it and whenever."""
        self._trace = _Trace([[] for _ in self.blocks], [[] for _ in self.blocks])
        self._pending = [None] * len(self.blocks)
        self._begun = 0
        self._columns = [first_column] * len(self.blocks)
        handles = []
        for layer, block in enumerate(self.blocks):
            handles.append(block.register_forward_pre_hook(self._before(layer), prepend=True, with_kwargs=True))
            handles.append(block.register_forward_hook(self._after(layer), with_kwargs=True))
        if self.receiver is not None:
            handles.append(self.receiver.register_forward_hook(self._receiver_hook, with_kwargs=True))
        else:
            handles.append(self.blocks[-1].register_forward_hook(self._last_output_hook))
        handles.append(self.model.register_forward_hook(self._logits_hook))
        self._removed_by_code = False
        try:
            yield self
        finally:
            self._removed_by_code = not all(_registered(handle) for handle in handles)
            for handle in handles:
                handle.remove()

    def _before(self, layer: int) -> Callable[..., None]:
        def keep_state(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            hidden = _hidden_argument(args, kwargs)
            call = _Call((), {}, hidden, 0, autocast=_autocast_state(hidden.device.type))
            found = _find_cache(args, kwargs)
            if found is not None:
                call.cache_slot, cache = found
                call.cache_before, length = _layer_state(cache, layer)
                # A recurrent state has no columns: the pass starts after the columns this block has run on.
                call.offset = self._columns[layer] if length is None else length
                self._columns[layer] += int(hidden.shape[1])
            self._pending[layer] = call
            if layer == 0:
                self._begun += 1

        return keep_state

    def _after(self, layer: int) -> Callable[..., None]:
        def keep_arguments(_module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], _output: Any) -> None:
            call = self._pending[layer]
            if call is None:
                raise ObservationError(f"block {layer} ran without passing its pre-hooks")
            self._pending[layer] = None
            call.args, call.kwargs, call.hidden = args, dict(kwargs), _hidden_argument(args, kwargs)
            if layer > 0:
                self._trace.received[layer - 1].append(call.hidden)
            self._trace.calls[layer].append(call)

        return keep_arguments

    def _receiver_hook(self, _module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], _output: Any) -> None:
        self._trace.received[-1].append(_hidden_argument(args, kwargs))

    def _logits_hook(self, _module: nn.Module, _args: Any, output: Any) -> None:
        logits = getattr(output, "logits", None)
        if logits is None and isinstance(output, tuple):
            logits = output[0]
        if isinstance(logits, torch.Tensor) and logits.dim() == 3:
            self._trace.logits.append(logits[:, -1].detach().float().cpu())

    @property
    def passes_so_far(self) -> int:
        """Forward passes block 0 has begun in the current :meth:`watching` (for "raised at step k")."""
        return self._begun

    def _last_output_hook(self, _module: nn.Module, _args: Any, output: Any) -> None:
        self._trace.received[-1].append(hidden_states_of(output))

    def observation(self, steps: int | None = None) -> Observation:
        """Replay the recorded block calls and compare: all of them, or (``steps``) each block's last ``steps``
        calls and the model's last ``steps`` outputs, the generation's passes when a function ran setup passes
        (e.g. computing its steering vector) before generating; ``setup_passes`` says how many were left out.

        Raises ObservationError where the recorded passes do not line up (a block's output received a different
        number of times than the block ran; fewer passes than ``steps``), ObserverRemoved where the watched code
        removed the observer's hooks."""
        if self._removed_by_code:
            raise ObserverRemoved(
                "removed hooks it did not register from the model while it ran (equiv check's observer's): what it "
                "touched cannot be observed, and any other hook on the model (a steering or reading hook of yours) "
                "is dropped the same way"
            )
        changes: set[Change] = set()
        passes: list[PassShape] = []
        largest = 0.0
        held = self.held_bytes()
        ran = len(self._trace.calls[0])
        if steps is not None and (ran < steps or len(self._trace.logits) < steps):
            raise ObservationError(
                f"the generation ran {ran} forward passes of block 0 and the model returned logits "
                f"{len(self._trace.logits)} times, for {steps} new tokens: expected at least one pass per token"
            )
        keep = ran if steps is None else steps
        for layer, (all_calls, all_received) in enumerate(zip(self._trace.calls, self._trace.received, strict=True)):
            # the generation's passes are the last ``keep`` of each list: a setup pass stopped early (a vector read
            # at one layer) reached fewer blocks, so the lists may differ before them, never within them
            calls, received = all_calls[len(all_calls) - keep :], all_received[len(all_received) - keep :]
            if len(calls) != keep or len(received) != keep or (steps is None and len(all_calls) != len(all_received)):
                raise ObservationError(
                    f"block {layer} ran {len(all_calls)} times but its output was received {len(all_received)} times "
                    f"(by {'block ' + str(layer + 1) if layer + 1 < len(self.blocks) else self.receiver_name})"
                )
            for step, (call, got) in enumerate(zip(calls, received, strict=True)):
                passes.append(PassShape(step, layer, int(call.hidden.shape[1])))
                computed = self._replay(layer, call)
                if computed.shape != got.shape:
                    raise ObservationError(
                        f"block {layer}, pass {step}: the block computes {tuple(computed.shape)} but "
                        f"{tuple(got.shape)} was received after it"
                    )
                differs = (computed != got) & ~(computed.isnan() & got.isnan())
                cells = differs.reshape(*differs.shape[:2], -1).any(dim=-1)  # [batch, seq]
                for row, index in torch.nonzero(cells).tolist():
                    changes.add(Change(step, layer, call.offset + index, row))
                if bool(cells.any()):
                    finite = differs & computed.isfinite() & got.isfinite()
                    if bool(finite.any()):
                        largest = max(largest, float((computed - got).abs()[finite].max()))
        self._kept = keep
        logits = tuple(self._trace.logits[len(self._trace.logits) - keep :])
        setup = ran - keep
        return Observation(frozenset(changes), tuple(passes), largest, self.receiver_name, logits, setup, held)

    def received_value(self, step: int, layer: int, column: int, row: int) -> torch.Tensor | None:
        """What the module after block ``layer`` received at (``step``, ``column``, ``row``) in the last observed
        generation ([hidden]; pass ``step`` counted as :meth:`observation` counted it), or None where that pass
        did not hold ``column``. Valid until the next :meth:`watching`."""
        calls, received = self._trace.calls[layer], self._trace.received[layer]
        index = len(calls) - self._kept + step
        if not 0 <= index < len(calls):
            return None
        local = column - calls[index].offset
        tensor = received[index]
        return tensor[row, local] if 0 <= local < tensor.shape[1] and row < tensor.shape[0] else None

    def held_bytes(self) -> int:
        """Bytes of the distinct tensor storages the current trace keeps alive (every block's arguments: hidden
        states, attention masks, position embeddings; the copies of the cache layers; the logits): the observer's
        memory cost, which grows with layers x passes x the cache
        length (a cache layer's state before pass k holds k-1 more columns than the prefill's)."""
        storages: dict[int, int] = {}

        def add(value: Any) -> None:
            # a fake tensor (a library's shape-only setup pass, e.g. nnsight's scan) holds no memory
            if isinstance(value, torch.Tensor) and not _is_fake(value):
                storage = value.untyped_storage()
                storages[storage.data_ptr()] = storage.nbytes()

        for calls in self._trace.calls:
            for call in calls:
                for value in (*call.args, *call.kwargs.values()):  # hidden states, masks, position embeddings
                    for item in value if isinstance(value, tuple) else (value,):
                        add(item)
                layers = getattr(call.cache_before, "layers", None)
                for state in layers or ():
                    add(getattr(state, "keys", None))
                    add(getattr(state, "values", None))
        for received in self._trace.received:
            for tensor in received:
                add(tensor)
        for tensor in self._trace.logits:
            add(tensor)
        return sum(storages.values())

    def _replay(self, layer: int, call: _Call) -> torch.Tensor:
        """What block ``layer`` computes from what it received in ``call``: its class ``forward`` (as it was when
        the observer was built), every hook suspended, on its own copy of its cache layer."""
        args, kwargs = call.replay_arguments()
        block = self.blocks[layer]
        device = call.hidden.device.type
        autocast = torch.autocast(device, call.autocast) if call.autocast is not None else nullcontext()
        with torch.no_grad(), suspended_hooks(block), autocast:
            output = self.forwards[layer](block, *args, **kwargs)
        return hidden_states_of(output)


def _registered(handle: Any) -> bool:
    """Whether a hook's ``RemovableHandle`` is still in its module's hook dict (someone else may have cleared it)."""
    hooks = handle.hooks_dict_ref()
    return hooks is not None and handle.id in hooks


def _is_fake(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is a FakeTensor (shape and dtype only: torch's private ``fake_tensor`` module, torch 2.x;
    False where this torch has none)."""
    try:
        from torch._subclasses.fake_tensor import FakeTensor
    except ImportError:
        return False
    return isinstance(tensor, FakeTensor)
