"""The busy-machine measure against a real CPU burner started beside it."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from equiv_core.support.machine_load import LoadMonitor

pytestmark = pytest.mark.integration  # starts a subprocess


def test_a_cpu_burner_beside_the_timing_is_seen_as_other_processes_cpu() -> None:
    """One busy-looping process for 3 s takes about one core, none of it counted as this process's own CPU time;
    timing as many threads as there are cores, that is a busy machine."""
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # let it start
        monitor = LoadMonitor(threads=os.cpu_count() or 1)
        time.sleep(3.0)
        load = monitor.stop()
    finally:
        burner.kill()
        burner.wait()
    assert load.others_cores >= 0.8
    assert load.busy and load.warning() is not None
