"""Wall-clock timing of one call, with the device synchronized on both sides so GPU work is counted."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def timed(function: Callable[[], T], device: torch.device) -> tuple[T, float]:
    """Run ``function`` once; return its result and the seconds it took (``perf_counter``, CUDA synchronized)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    result = function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - started
