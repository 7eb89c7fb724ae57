"""What a benchmark run found, typed: each (arm, new tokens) cell's timing beside its correctness, the whole
report with its provenance, and how a cell is built from one size's rounds and the correctness pass."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from equiv_core.arms.steering import GenerationRecord
from equiv_core.bench.arms import ARMS
from equiv_core.bench.budget import TimingPlan
from equiv_core.bench.statistics import (
    MEDIAN_CI_CONFIDENCE,
    GrowthExponent,
    RatioStats,
    TimingStats,
    ci_label,
    growth_exponent_ci,
    summarize,
    summarize_ratios,
)
from equiv_core.bench.timer import Measurement
from equiv_core.config.bench import BenchConfig
from equiv_core.findings.comparison import TensorComparison, compare_tensors, tensor_sha256
from equiv_core.models.architecture import Architecture
from equiv_core.models.determinism import DeterminismReport
from equiv_core.models.provenance import Environment
from equiv_core.support.machine_load import MachineLoad


class BenchStatus(enum.StrEnum):
    """Whether a benchmark cell's timing is the cost of correct steering: ``ok`` (a steered arm that matched the
    hook), ``baseline`` (an unsteered arm), or why not."""

    OK = "ok"
    BASELINE = "baseline"
    NOT_APPLIED = "steering not applied"  # its output equals unsteered generation: the edit did nothing
    IDS_DIFFER = "ids differ from hook"  # its token ids are not the raw hook's

    @property
    def correct(self) -> bool:
        return self in (BenchStatus.OK, BenchStatus.BASELINE)


@dataclass(frozen=True, slots=True)
class ArmResult:
    """One (arm, new_tokens) cell: timing (default kernels) beside correctness (deterministic pass)."""

    arm: str
    new_tokens: int
    stats: TimingStats
    measurements: tuple[Measurement, ...]
    target: float
    generated_ids: tuple[int, ...]
    logits_sha256: str
    ids_match_hook: bool | None
    logits_vs_hook: TensorComparison | None
    steering_applied: bool | None
    timed_ids_mismatches: int
    ratio_to_hook: float | None = None
    ratio_to_unsteered: float | None = None
    paired_to_hook: RatioStats | None = None  # per-round arm/hook ratios, see paired_ratios

    @property
    def cpu_stats(self) -> TimingStats:
        """Process CPU seconds per round (every thread): above wall time x threads means spinning or contention."""
        return summarize([m.cpu_s for m in self.measurements])

    @property
    def peak_bytes(self) -> int:
        """The most memory one timed round added at its peak (see :mod:`equiv_core.bench.timer`)."""
        return max(m.peak_bytes for m in self.measurements)

    @property
    def precise(self) -> bool:
        """The 95% CI of the median reached the target width."""
        return self.stats.meets(self.target)

    @property
    def precision_note(self) -> str:
        """Empty when precise, else e.g. ``CI +-7.3% (target +-2%)`` or ``range 75% +-7.3% (target: a 95% CI
        within +-2%)`` when the rounds are too few for a 95% CI (see :func:`~.statistics.ci_label`)."""
        if self.precise:
            return ""
        if self.stats.ci_level >= MEDIAN_CI_CONFIDENCE:
            return f"CI +-{self.stats.ci_half_width:.1%} (target +-{self.target:.0%})"
        label = ci_label(self.stats.n)
        return f"{label} +-{self.stats.ci_half_width:.1%} (target: a 95% CI within +-{self.target:.0%})"

    @property
    def status(self) -> BenchStatus:
        """``ok``, or why this arm's speed must not be read as the cost of correct steering."""
        if self.steering_applied is False:
            return BenchStatus.NOT_APPLIED
        if self.ids_match_hook is False:
            return BenchStatus.IDS_DIFFER
        return BenchStatus.OK if ARMS.get(self.arm).steered else BenchStatus.BASELINE

    def to_dict(self) -> dict[str, Any]:
        return {
            "arm": self.arm,
            "new_tokens": self.new_tokens,
            "median_s": self.stats.median_s,
            "iqr_s": self.stats.iqr_s,
            "min_s": self.stats.min_s,
            "n": self.stats.n,
            "ci95_low_s": self.stats.ci95_low_s,
            "ci95_high_s": self.stats.ci95_high_s,
            "ci_half_width": self.stats.ci_half_width,
            "ci_level": self.stats.ci_level,  # the real level of [ci95_low_s, ci95_high_s] for n rounds
            "precise": self.precise,
            "target_ci_half_width": self.target,
            "cpu_median_s": self.cpu_stats.median_s,
            "peak_memory_bytes": self.peak_bytes,
            "wall_s": [m.wall_s for m in self.measurements],
            "cpu_s": [m.cpu_s for m in self.measurements],
            "ratio_to_hook": self.ratio_to_hook,
            "ratio_to_unsteered": self.ratio_to_unsteered,
            "paired_ratio_to_hook": None if self.paired_to_hook is None else self.paired_to_hook.to_dict(),
            "ids_match_hook": self.ids_match_hook,
            "logits_bit_identical_to_hook": None if self.logits_vs_hook is None else self.logits_vs_hook.bit_identical,
            "logits_max_abs_diff": None if self.logits_vs_hook is None else self.logits_vs_hook.max_abs_diff,
            "logits_sha256": self.logits_sha256,
            "steering_applied": self.steering_applied,
            "status": self.status,
            "generated_ids": list(self.generated_ids),
            "timed_ids_mismatches": self.timed_ids_mismatches,
            "timing_mode": "default kernels",
            "correctness_mode": "deterministic kernels"
            if ARMS.get(self.arm).deterministic_check
            else "default kernels",
        }


@dataclass(frozen=True, slots=True)
class BenchDeterminism:
    """The determinism settings of the two passes: ``correctness`` (deterministic kernels) and ``timing`` (default
    kernels)."""

    correctness: DeterminismReport
    timing: DeterminismReport

    def to_dict(self) -> dict[str, Any]:
        return {"correctness": self.correctness.to_dict(), "timing": self.timing.to_dict()}


@dataclass(frozen=True, slots=True)
class BenchReport:
    """All cells of one benchmark run, with growth exponents and provenance."""

    config: BenchConfig
    results: tuple[ArmResult, ...]
    environment: Environment
    determinism: BenchDeterminism
    architecture: Architecture
    prompt_length: int
    load: MachineLoad
    memory_method: str
    timing_seconds: float
    not_expressible: dict[str, str] = field(default_factory=dict)  # arm -> why it cannot run here
    compile_seconds: float | None = None  # floor: seconds of the calls that compiled a graph
    plans: tuple[TimingPlan, ...] = ()  # the budget's plans, in the order they were made (see bench/budget.py)
    not_timed: dict[int, str] = field(default_factory=dict)  # new_tokens -> why that size has no timings
    budget_notes: tuple[str, ...] = ()  # sizes the budget ended before their planned rounds, one line each

    def cell(self, arm: str, new_tokens: int) -> ArmResult | None:
        return next((r for r in self.results if r.arm == arm and r.new_tokens == new_tokens), None)

    def growth_exponents(self) -> dict[str, GrowthExponent]:
        """Per arm, the log-log slope of median time against new tokens over the requested sweep, with its
        bootstrap CI over rounds (seeded by the run's seed); never a result when the machine was busy."""
        exponents = {}
        for arm in self.config.arms:
            cells = [cell for size in self.config.new_tokens or () if (cell := self.cell(arm, size)) is not None]
            sizes = [cell.new_tokens for cell in cells]  # the sizes timed: the budget may have dropped some
            samples = [[m.wall_s for m in cell.measurements] for cell in cells]
            exponents[arm] = growth_exponent_ci(sizes, samples, seed=self.config.seed, busy=self.load.busy)
        return exponents

    @property
    def precise_share(self) -> float:
        """The fraction of cells whose median CI reached the target."""
        return sum(result.precise for result in self.results) / max(len(self.results), 1)

    def prefill_split(self) -> dict[str, dict[str, float]]:
        """Per arm: prefill seconds (median of 1-token runs) and decode seconds per token at the longest sweep."""
        split = {}
        longest = max((size for size in self.config.new_tokens or () if size not in self.not_timed), default=1)
        for arm in self.config.arms:
            prefill, longest_cell = self.cell(arm, 1), self.cell(arm, longest)
            if prefill is None or longest_cell is None or longest <= 1:
                continue
            decode = (longest_cell.stats.median_s - prefill.stats.median_s) / (longest - 1)
            split[arm] = {"prefill_s": prefill.stats.median_s, "decode_per_token_s": decode, "at_new_tokens": longest}
        return split

    def incorrect_cells(self) -> tuple[str, ...]:
        """``<arm> x<new tokens>`` of every cell whose arm is not correct (status other than ok or baseline)."""
        return tuple(f"{result.arm} x{result.new_tokens}" for result in self.results if not result.status.correct)

    @property
    def all_correct(self) -> bool:
        return not self.incorrect_cells()

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.config.model,
            "device": self.environment.device,
            "dtype": self.config.dtype,
            "prompt": self.config.prompt,
            "prompt_length": self.prompt_length,
            "config": self.config.to_dict(),
            "architecture": self.architecture.to_dict(),
            "environment": self.environment.to_dict(),
            "determinism": self.determinism.to_dict(),
            "growth_exponents": {arm: value.to_dict() for arm, value in self.growth_exponents().items()},
            "machine_load": self.load.to_dict(),
            "memory_method": self.memory_method,
            "timing_seconds": self.timing_seconds,
            "precise_share": self.precise_share,
            "not_expressible": self.not_expressible,
            "floor_compile_seconds": self.compile_seconds,
            "timing_plans": [plan.to_dict() for plan in self.plans],
            "sizes_not_timed": {str(size): reason for size, reason in self.not_timed.items()},
            "budget_notes": list(self.budget_notes),
            "torch_threads": self.environment.compute.torch_threads,
            "prefill_split": self.prefill_split(),
            "all_correct": self.all_correct,
            "records": [result.to_dict() for result in self.results],
        }


def size_cells(
    config: BenchConfig,
    size: int,
    expected: dict[tuple[str, int], GenerationRecord],
    measurements: dict[str, list[Measurement]],
    mismatches: dict[str, int],
    tolerance: tuple[float, float],
) -> list[ArmResult]:
    """The results of one size: timing stats of its rounds (``measurements``; ``mismatches``: timed runs whose ids
    differ from the correctness pass) beside the correctness of the deterministic pass (``expected``)."""
    stats = {arm: summarize([m.wall_s for m in values]) for arm, values in measurements.items()}
    hook, unsteered = expected["hook", size], expected["unsteered", size]
    cells = []
    for arm in config.arms:
        record = expected[arm, size]
        steered = ARMS.get(arm).steered
        cells.append(
            ArmResult(
                arm=arm,
                new_tokens=size,
                stats=stats[arm],
                measurements=tuple(measurements[arm]),
                target=config.target,
                generated_ids=record.generated_ids,
                logits_sha256=tensor_sha256(record.step_logits),
                ids_match_hook=record.generated_ids == hook.generated_ids if steered else None,
                logits_vs_hook=compare_tensors(record.step_logits, hook.step_logits, *tolerance) if steered else None,
                steering_applied=record.generated_ids != unsteered.generated_ids if steered else None,
                timed_ids_mismatches=mismatches[arm],
                ratio_to_hook=ratio(stats, arm, "hook"),
                ratio_to_unsteered=ratio(stats, arm, "unsteered"),
                paired_to_hook=paired_ratios(measurements, arm, "hook"),
            )
        )
    return cells


def paired_ratios(measurements: dict[str, list[Measurement]], arm: str, baseline: str) -> RatioStats | None:
    """The median of per-round ratios arm / baseline, with its 95% CI: rounds are interleaved, so round k of both
    ran side by side, and a slow spell of the machine (seen here: every arm 25% slower for two rounds) cancels
    in the ratio though it widens each arm's own CI. Arms only ever stop getting rounds, so their first
    min(n_arm, n_baseline) rounds are the paired ones. None without the baseline or with no pair."""
    if baseline not in measurements or arm == baseline:
        return None
    pairs = list(zip(measurements[arm], measurements[baseline], strict=False))
    ratios = [a.wall_s / b.wall_s for a, b in pairs if b.wall_s > 0]
    return summarize_ratios(ratios) if ratios else None


def ratio(stats: dict[str, TimingStats], arm: str, baseline: str) -> float | None:
    """Median over the baseline's median in the same run, or None when the baseline was not timed."""
    if baseline not in stats or stats[baseline].median_s <= 0:
        return None
    return stats[arm].median_s / stats[baseline].median_s
