"""One measured call on the CPU: wall and CPU time, and the peak memory it added."""

from __future__ import annotations

import time

import pytest
import torch

from equiv_core.bench.timer import measure, memory_method

CPU = torch.device("cpu")


def _allocate_and_free(size: int) -> int:
    block = torch.ones(size, dtype=torch.uint8)  # written, so its pages are resident
    total = int(block[::4096].sum())
    del block
    return total


@pytest.mark.skipif(memory_method(CPU) != "linux-vmhwm", reason="peak RSS reset needs Linux /proc/self/clear_refs")
def test_peak_memory_counts_what_the_call_held_at_its_peak_even_when_freed() -> None:
    _, measured = measure(lambda: _allocate_and_free(64 * 2**20), CPU)
    assert measured.peak_bytes >= 60 * 2**20


def test_cpu_time_of_a_busy_call_is_close_to_its_wall_time_and_a_sleep_has_almost_none() -> None:
    def spin() -> None:
        end = time.perf_counter() + 0.2
        while time.perf_counter() < end:
            pass

    _, busy = measure(spin, CPU)
    _, asleep = measure(lambda: time.sleep(0.2), CPU)
    assert busy.wall_s >= 0.2 and busy.cpu_s >= 0.5 * busy.wall_s
    assert asleep.wall_s >= 0.2 and asleep.cpu_s < 0.05
