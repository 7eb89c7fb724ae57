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


def test_cpu_time_counts_the_cpu_work_a_call_did_and_not_its_sleep() -> None:
    """One call does a fixed amount of CPU work (0.2 s of this process's CPU time, however long a shared core takes
    to grant it), another sleeps 0.2 s: the first measures at least its work, the second almost none."""

    def work() -> None:
        end = time.process_time() + 0.2
        while time.process_time() < end:
            pass

    _, busy = measure(work, CPU)
    _, asleep = measure(lambda: time.sleep(0.2), CPU)
    assert busy.cpu_s >= 0.2
    assert asleep.wall_s >= 0.2 and asleep.cpu_s < 0.05
