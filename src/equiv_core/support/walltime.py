"""Where one ``equiv run`` spent its wall time: start-up, imports, model load, model work, the checks around it,
MLflow, and the rest. Torch-free: the CLI creates the clock before anything heavy is imported.

"Model work" is the wall time inside generations and forward passes (nnsight's tracing of them included; see
:mod:`equiv_core.arms.model_work`); everything else is the harness. The issue "Performance" asks that the harness stay
under 25% of a run on the default model: ``harness_share`` is that fraction.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import psutil


def process_started() -> float:
    """When this process was created (seconds since the epoch, from the OS via psutil; 10 ms resolution)."""
    return float(psutil.Process().create_time())


@dataclass(frozen=True, slots=True)
class RunTimings:
    """What one run of the findings measured of itself, in seconds: ``load_s`` loading the model, ``prepare_s``
    all of preparing it (determinism, load, layer probe, nnsight wrapper), ``findings_s`` the findings (their model
    work included), ``model_work_s`` inside generations and forward passes, made in ``model_calls`` calls with
    ``shared_calls`` more answered from an identical earlier call; ``spec_s`` the spec findings' loop (spec mode)."""

    load_s: float
    prepare_s: float
    findings_s: float
    model_work_s: float
    model_calls: int
    shared_calls: int
    spec_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}


@dataclass(frozen=True, slots=True)
class CommandStart:
    """When the process was created and when the command began, both in seconds since the epoch."""

    process_epoch: float
    command_epoch: float


@dataclass(frozen=True, slots=True)
class TimeBreakdown:
    """Seconds of one run, by phase; the phases add up to ``total_s``.

    ``startup_s``: interpreter start and the ``equiv`` command line, before the command ran; ``imports_s``: torch,
    transformers, nnsight (and the findings) imported by the command; ``prepare_s``: determinism, model load
    (``load_s`` of it), the layer probe and nnsight's wrapper; ``model_work_s``: inside generations and forward
    passes (``model_calls`` made, ``shared_calls`` answered from an identical earlier call); ``checks_s``: the
    findings' own work around the model (comparisons, hashes, evidence); ``mlflow_s``: importing MLflow, reaching
    the store and logging; ``other_s``: the rest (provenance, the weights hash, the report, outputs).
    """

    startup_s: float
    imports_s: float
    prepare_s: float
    load_s: float
    model_work_s: float
    model_calls: int
    shared_calls: int
    checks_s: float
    mlflow_s: float
    other_s: float
    total_s: float

    @property
    def harness_share(self) -> float:
        """The fraction of the run that was not model work (0..1)."""
        return 1.0 - self.model_work_s / self.total_s if self.total_s > 0 else 0.0

    def render(self) -> str:
        """One line: ``time: 14.1 s = start-up 0.2 s, imports 3.0 s, ...; harness 38%``."""
        calls = f"{self.model_calls} call{'' if self.model_calls == 1 else 's'}"
        return (
            f"time: {self.total_s:.1f} s = start-up {self.startup_s:.1f} s, imports {self.imports_s:.1f} s, "
            f"model load {self.prepare_s:.1f} s, model work {self.model_work_s:.1f} s ({calls}, "
            f"{self.shared_calls} shared), checks {self.checks_s:.1f} s, MLflow {self.mlflow_s:.1f} s, other "
            f"{self.other_s:.1f} s; harness (all but model work) {self.harness_share:.0%}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "harness_share": self.harness_share}


def breakdown(start: CommandStart, imports_done_epoch: float, timings: RunTimings, mlflow_s: float) -> TimeBreakdown:
    """The breakdown up to now, from when the process and the command started, when the command's heavy imports
    were done (epoch seconds), what the run measured of itself and MLflow's seconds."""
    total = time.time() - start.process_epoch
    startup = start.command_epoch - start.process_epoch
    imports = imports_done_epoch - start.command_epoch
    checks = max(timings.findings_s - timings.model_work_s, 0.0)
    spent = startup + imports + timings.prepare_s + timings.model_work_s + checks + mlflow_s
    return TimeBreakdown(
        startup_s=startup,
        imports_s=imports,
        prepare_s=timings.prepare_s,
        load_s=timings.load_s,
        model_work_s=timings.model_work_s,
        model_calls=timings.model_calls,
        shared_calls=timings.shared_calls,
        checks_s=checks,
        mlflow_s=mlflow_s,
        other_s=max(total - spent, 0.0),
        total_s=total,
    )
