"""The sweep's own measurements as a pytest-benchmark JSON file, so each arm is timed once per job.

The document has pytest-benchmark's layout (``machine_info``, ``commit_info``, ``benchmarks`` with ``stats`` and
``data``; pytest-benchmark 5, ``plugin.pytest_benchmark_generate_json``), and each benchmark is named like its
twin in ``bench/test_steering_cost.py`` (``test_arm_cost[<new_tokens>-<arm>]``), so ``pytest-benchmark compare``
lines up a sweep with a run of the pytest suite. The statistics are computed by pytest-benchmark's own ``Stats``
from the wall times of the sweep's timed rounds (one call per round: ``iterations`` 1).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from equiv_core.bench.results import ArmResult, BenchReport

SUITE_TEST = "bench/test_steering_cost.py::test_arm_cost"


def _benchmark(report: BenchReport, cell: ArmResult) -> dict[str, Any]:
    from pytest_benchmark.stats import Stats

    stats = Stats()
    for measurement in cell.measurements:
        stats.update(measurement.wall_s)
    param = f"{cell.new_tokens}-{cell.arm}"
    config = report.config
    return {
        "group": None,
        "name": f"test_arm_cost[{param}]",
        "fullname": f"{SUITE_TEST}[{param}]",
        "params": {"new_tokens": cell.new_tokens, "arm": cell.arm},
        "param": param,
        "extra_info": {
            "arm": cell.arm,
            "new_tokens": cell.new_tokens,
            "prompt_tokens": report.prompt_length,
            "layer": config.layer,
            "model": config.model,
            "dtype": config.dtype,
            "device": report.environment.device,
            "ids_match_hook": cell.ids_match_hook,
            "logits_sha256": cell.logits_sha256,
            "cpu_s": [measurement.cpu_s for measurement in cell.measurements],
            "peak_memory_bytes": cell.peak_bytes,
            "ci_half_width": cell.stats.ci_half_width,
            "precise": cell.precise,
            "source": "equiv bench sweep (interleaved adaptive rounds)",
        },
        "options": {
            "disable_gc": False,
            "timer": "perf_counter",
            "min_rounds": config.rounds,
            "max_time": config.budget_s,
            "min_time": 0,
            "warmup": config.warmup > 0,
        },
        "stats": {**stats.as_dict(), "data": list(stats.data), "iterations": 1},
    }


def pytest_benchmark_document(report: BenchReport) -> dict[str, Any]:
    """The pytest-benchmark JSON document of one sweep; ``machine_info.equiv`` carries this run's environment,
    timing load and determinism flags, as ``bench/conftest.py`` adds them in the pytest suite."""
    from pytest_benchmark import __version__
    from pytest_benchmark.plugin import pytest_benchmark_generate_machine_info
    from pytest_benchmark.utils import get_commit_info

    machine_info = pytest_benchmark_generate_machine_info()
    machine_info["equiv"] = {
        **report.environment.to_dict(),
        "dtype": report.config.dtype,
        "determinism": report.determinism.timing.to_dict(),
        "machine_load": report.load.to_dict(),
        "timing_mode": "default kernels (correctness checked first with deterministic kernels)",
    }
    return {
        "machine_info": machine_info,
        "commit_info": get_commit_info("equiv-bench"),
        "benchmarks": [_benchmark(report, cell) for cell in report.results],
        "datetime": datetime.now(UTC).isoformat(),
        "version": __version__,
    }
