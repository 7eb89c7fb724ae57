"""A benchmark report built from given cells, for tests of what reads one (table, plot, pytest-benchmark JSON):
the provenance around the cells is fixed and plausible (CPU, 2 threads, a 2-layer model), never measured."""

from __future__ import annotations

from equiv_core.bench.results import ArmResult, BenchDeterminism, BenchReport
from equiv_core.config.bench import BenchConfig
from equiv_core.models.architecture import Architecture
from equiv_core.models.determinism import DeterminismReport
from equiv_core.models.provenance import Compute, Environment, Versions
from equiv_core.support.machine_load import MachineLoad

QUIET = MachineLoad(
    cores=2, threads=2, loadavg_start=(0.1, 0.1, 0.1), loadavg_end=(0.2, 0.1, 0.1), others_share=0.01, seconds=1
)
CPU = Environment(
    Versions("3.11.2", "Linux", "python", (("torch", "2.13.0"),), None, None),
    "cpu",
    None,
    None,
    None,
    None,
    Compute(2, 2, None, None, None, "AVX2", 2),
)
TIMING = DeterminismReport(0, False, False, False, False, False, "highest", None, False)
CORRECTNESS = DeterminismReport(0, True, True, False, False, False, "highest", ":4096:8", False)
TINY = Architecture("transformer.h", 2, 64, "tensor", 256, "sdpa")


def bench_report(
    config: BenchConfig, results: tuple[ArmResult, ...], load: MachineLoad = QUIET, **optional: object
) -> BenchReport:
    """A report of ``results`` measured under ``config``; ``optional``: BenchReport's optional fields."""
    determinism = BenchDeterminism(CORRECTNESS, TIMING)
    return BenchReport(config, results, CPU, determinism, TINY, 4, load, "linux-vmhwm", 1.0, **optional)
