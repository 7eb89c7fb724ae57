"""One measured call: wall time, process CPU time and peak memory growth, the device synchronized around it.

Peak memory is what the call adds at its highest point, over what was resident before it:
- CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (bytes of tensors, not the caching
  allocator's reserve);
- CPU on Linux: the peak resident set size (``VmHWM`` in ``/proc/self/status``) after resetting it by writing
  ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0, proc(5)), minus the resident size before the call;
- CPU elsewhere: resident size after minus before (``psutil``), which misses memory freed inside the call;
  ``MEMORY_METHOD`` says which one ran.
The reset and the reads happen outside the timed region.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import psutil
import torch

T = TypeVar("T")

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass(frozen=True, slots=True)
class Measurement:
    """One call: ``wall_s`` and ``cpu_s`` in seconds (CPU time of every thread of this process, so it can exceed
    wall time), ``peak_bytes`` the memory the call added at its peak (see module docstring)."""

    wall_s: float
    cpu_s: float
    peak_bytes: int


def _status_kib(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _can_reset_peak_rss() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        _status_kib("VmHWM")
    except (OSError, KeyError, ValueError):
        return False
    return True


def memory_method(device: torch.device) -> str:
    """How :func:`measure` measures peak memory on ``device``: ``cuda-max-allocated``, ``linux-vmhwm`` or
    ``rss-delta``."""
    if device.type == "cuda":
        return "cuda-max-allocated"
    return "linux-vmhwm" if _can_reset_peak_rss() else "rss-delta"


def measure(function: Callable[[], T], device: torch.device, method: str | None = None) -> tuple[T, Measurement]:
    """Run ``function`` once; return its result and its :class:`Measurement`.

    Wall time is ``time.perf_counter`` and CPU time ``time.process_time``, both read with CUDA synchronized.
    ``method`` is :func:`memory_method`'s answer (pass it in to avoid probing on every call).
    """
    method = method or memory_method(device)
    if method == "cuda-max-allocated":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    elif method == "linux-vmhwm":
        _CLEAR_REFS.write_text("5")
        before = _status_kib("VmRSS") * 1024
    else:
        before = psutil.Process().memory_info().rss
    wall_started, cpu_started = time.perf_counter(), time.process_time()
    result = function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter() - wall_started, time.process_time() - cpu_started
    if method == "cuda-max-allocated":
        peak = torch.cuda.max_memory_allocated(device) - before
    elif method == "linux-vmhwm":
        peak = _status_kib("VmHWM") * 1024 - before
    else:
        peak = psutil.Process().memory_info().rss - before
    return result, Measurement(wall, cpu, max(0, peak))
