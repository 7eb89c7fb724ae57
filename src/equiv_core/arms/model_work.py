"""The model work of one run: every generation and forward pass timed, and identical ones made once.

The five findings generate some of the same things (the unsteered generation four times, the raw-hook and ``iter[0]``
arms twice each, on the default run). Within :meth:`ModelWork.shared` a call whose every input is identical to an
earlier one (the token ids, the edit, when it fires, cache use, the arm) returns a copy of the earlier result instead
of running the model again: in deterministic mode, where every finding runs, the two would be bit-identical. Outside
it (the benchmark's timing rounds, tests that reuse one model across differently patched arms) every call runs.

``seconds`` is the wall time spent inside model calls (including nnsight's tracing of them): the run's report splits
its wall time into this "model work" and the harness around it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import torch

from equiv_core.arms.steering import GenerationRecord

T = TypeVar("T")


def tensor_key(tensor: torch.Tensor) -> Hashable:
    """A hashable key of a tensor's dtype, shape and exact values (token ids: small)."""
    return (str(tensor.dtype), tuple(tensor.shape), tuple(tensor.flatten().tolist()))


def _copy(value: Any) -> Any:
    """A copy a caller may modify without changing what later callers are given."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, GenerationRecord):
        return replace(value, step_logits=value.step_logits.clone())
    return value


@dataclass(eq=False)
class ModelWork:
    """Seconds and calls of model work, and (while :meth:`shared`) the results of calls already made."""

    seconds: float = 0.0
    calls: int = 0
    shared_calls: int = 0
    _sharing: bool = False
    _results: dict[Hashable, Any] = field(default_factory=dict)

    @contextmanager
    def shared(self) -> Iterator[ModelWork]:
        """Within this block, a call identical to an earlier one returns a copy of its result."""
        self._sharing, self._results = True, {}
        try:
            yield self
        finally:
            self._sharing, self._results = False, {}

    def run(self, key: Hashable, call: Callable[[], T]) -> T:
        """``call()``, timed; or, while sharing and ``key`` was seen, a copy of its earlier result."""
        if self._sharing and key in self._results:
            self.shared_calls += 1
            return _copy(self._results[key])  # type: ignore[no-any-return]
        result = self.timed(call)
        if self._sharing:
            self._results[key] = _copy(result)
        return result

    def timed(self, call: Callable[[], T]) -> T:
        """``call()``, its wall time counted as model work; never shared."""
        started = time.perf_counter()
        try:
            return call()
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1
