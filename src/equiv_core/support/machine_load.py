"""How busy the machine was while timing: load averages and the CPU time other processes took.

The load average lags (a 1-minute exponential average) and counts this process's own threads, so the verdict
"busy" comes from a direct measure instead: the CPU time every process used (``/proc/stat`` via
``psutil.cpu_times``) minus this process's own, as a share of the machine's capacity over the same wall time.
Oversubscribed OpenMP threads spin while they wait, so process CPU time is no cure for contention (issue
"Performance"): a busy machine must be said, not corrected for.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import psutil

BUSY_SLACK_CORES = 0.2
"""Timings are unreliable when other processes used more cores than the timed threads left free, plus this slack
(a fifth of a core: daemons, the terminal). On 2 cores with 2 torch threads, anything over 0.2 cores is busy."""


@dataclass(frozen=True, slots=True)
class _Snapshot:
    wall_s: float
    busy_cpu_s: float  # every process, all cores
    own_cpu_s: float  # this process (all its threads) and its waited-for children
    loadavg: tuple[float, float, float]


def _snapshot() -> _Snapshot:
    times = psutil.cpu_times()
    # Linux counts guest time inside user time as well (psutil docs): leave it out of the sum once.
    idle = times.idle + sum(getattr(times, name, 0.0) for name in ("iowait", "guest", "guest_nice"))
    busy = sum(times) - idle
    own = psutil.Process().cpu_times()
    return _Snapshot(
        time.monotonic(), busy, own.user + own.system + own.children_user + own.children_system, os.getloadavg()
    )


@dataclass(frozen=True, slots=True)
class MachineLoad:
    """Load averages at the start and end of a timed section (1, 5, 15 min), the machine's logical cores, the
    threads the timed code runs (torch intra-op threads), and ``others_share``: the fraction of the machine's CPU
    capacity other processes used meanwhile (0..1)."""

    cores: int
    threads: int
    loadavg_start: tuple[float, float, float]
    loadavg_end: tuple[float, float, float]
    others_share: float
    seconds: float

    @property
    def others_cores(self) -> float:
        """Cores' worth of CPU other processes used on average."""
        return self.others_share * self.cores

    @property
    def busy(self) -> bool:
        """Other processes competed for the cores the timed threads need."""
        return self.others_cores > max(self.cores - self.threads, 0) + BUSY_SLACK_CORES

    def warning(self) -> str | None:
        """One line when the machine was busy, else None."""
        if not self.busy:
            return None
        return (
            f"warning: the machine was busy while timing: other processes used {self.others_cores:.1f} of its "
            f"{self.cores} cores beside {self.threads} timed threads (load average {self.loadavg_start[0]:.2f} at "
            f"start, {self.loadavg_end[0]:.2f} at end); medians and ratios are not reliable, rerun on a quiet machine"
        )

    def run_warning(self) -> str | None:
        """For ``equiv run``: one line when the machine is busy, saying what to do and what that changes."""
        if not self.busy:
            return None
        return (
            f"warning: the machine is busy: other processes used {self.others_cores:.1f} of its {self.cores} cores "
            f"beside this run's {self.threads} torch threads; oversubscribed OpenMP threads spin while they wait "
            "(seen on this project's 2-core machines: runs 4-8x slower). Run it with fewer threads "
            "(OMP_NUM_THREADS=1) or on a quiet machine: token ids usually stay the same (a near-tie can flip), but "
            f"logits hashes and so the run fingerprint differ from a {self.threads}-thread run (the thread counts "
            "are recorded with the run)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "cores": self.cores,
            "threads": self.threads,
            "others_cores": self.others_cores,
            "loadavg_start": list(self.loadavg_start),
            "loadavg_end": list(self.loadavg_end),
            "others_cpu_share": self.others_share,
            "seconds": self.seconds,
            "busy": self.busy,
            "busy_slack_cores": BUSY_SLACK_CORES,
        }


class LoadMonitor:
    """Created when timing starts; ``stop()`` gives the :class:`MachineLoad` of the section since then."""

    def __init__(self, threads: int) -> None:
        self._threads = threads
        self._start = _snapshot()

    def stop(self) -> MachineLoad:
        end = _snapshot()
        cores = psutil.cpu_count() or 1
        wall = max(end.wall_s - self._start.wall_s, 1e-9)
        others = (end.busy_cpu_s - self._start.busy_cpu_s) - (end.own_cpu_s - self._start.own_cpu_s)
        share = min(max(others / (wall * cores), 0.0), 1.0)
        return MachineLoad(
            cores=cores,
            threads=self._threads,
            loadavg_start=self._start.loadavg,
            loadavg_end=end.loadavg,
            others_share=share,
            seconds=wall,
        )
