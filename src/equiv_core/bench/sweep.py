"""The benchmark: a correctness pass in deterministic mode, then adaptive interleaved timing with default kernels.

Why two passes: deterministic kernels make equivalence checks bit-reproducible but can be slower; timing with
them would misstate the cost users see. Every record says which pass each of its numbers came from.

Timing is adaptive (as pyperf and ``torch.utils.benchmark.Timer.blocked_autorange`` calibrate their loops): each
(arm, size) cell gets at least ``rounds`` rounds, then keeps getting interleaved rounds until the 95% CI of its
median is within +-``target`` of the median, or the size's share of ``budget_s`` is spent. Cells that miss the
target are flagged with the width they reached; nothing is silently averaged away.

The budget is kept: no round starts that would end past it (at the pace of the round before), and after each
size a :class:`~equiv_core.bench.budget.TimingPlan` says, before the next sizes run, whether they fit at this
pace or which rounds are capped and which sizes dropped. The correctness pass and compiling ``floor`` come
before the timing and outside its budget; each says when it starts and how long it took (:mod:`.progress`).
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import torch

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.floor import compile_seconds as floor_compile_seconds
from equiv_core.arms.prepare import prepare_run
from equiv_core.arms.steering import GenerationRecord, NotExpressible
from equiv_core.bench.arms import ARMS
from equiv_core.bench.budget import ROUNDS_UNDER_BUDGET, TimingPlan, plan_timing, round_seconds
from equiv_core.bench.statistics import (
    MEDIAN_CI_CONFIDENCE,
    GrowthExponent,
    TimingStats,
    ci_label,
    growth_exponent_ci,
    summarize,
)
from equiv_core.bench.timer import Measurement, measure, memory_method
from equiv_core.config.bench import BenchConfig, ValidBenchConfig, for_device
from equiv_core.config.catalog import (
    DEFAULT_MODEL,
)
from equiv_core.config.validation import check_fits_context, check_layer, check_prompt_length
from equiv_core.findings.comparison import LOGITS_TOLERANCE, TensorComparison, compare_tensors, tensor_sha256
from equiv_core.models.architecture import Architecture
from equiv_core.models.determinism import DeterminismReport, configure_determinism
from equiv_core.models.load import resolve_device
from equiv_core.models.provenance import Environment, environment_info
from equiv_core.support.machine_load import LoadMonitor, MachineLoad
from equiv_core.support.progress import Progress

_now = time.monotonic  # the clock of the budget (a name of its own so tests can script it)


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
    paired_to_hook: TimingStats | None = None  # per-round arm/hook ratios (dimensionless), see _paired_ratios

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
            "paired_ratio_to_hook": None
            if self.paired_to_hook is None
            else {
                "median": self.paired_to_hook.median_s,
                "ci95_low": self.paired_to_hook.ci95_low_s,
                "ci95_high": self.paired_to_hook.ci95_high_s,
                "ci_level": self.paired_to_hook.ci_level,
                "n": self.paired_to_hook.n,
            },
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


def _check_fits(config: BenchConfig, context: SteeringContext, prompt_length: int) -> int:
    """The checks that need the loaded model; returns the absolute layer."""
    check_prompt_length(config.prompt, prompt_length)
    check_fits_context(prompt_length, max(config.new_tokens or (1,)), context.architecture.max_positions, "new tokens")
    return check_layer(config.layer, context.architecture.num_layers)


@dataclass(frozen=True, slots=True)
class _Correctness:
    """The correctness pass: one record per (arm, size), and the arms that cannot run here, with the reason."""

    records: dict[tuple[str, int], GenerationRecord]
    not_expressible: dict[str, str]


def _correctness_pass(
    context: SteeringContext,
    input_ids: torch.Tensor,
    sizes: tuple[int, ...],
    arms: tuple[str, ...],
    layer: int,
    seed: int,
    progress: Progress,
) -> _Correctness:
    """One run of every arm at every size, plus hook and unsteered even when they are not timed; deterministic
    kernels except for arms that say otherwise (``floor``: compiled once, with the kernels it is timed with).

    Arm by arm, each with a line before and after (``floor``'s with its compile seconds, in every mode: compiling
    is the longest step of a first run); on a terminal the per-arm lines give way to a bar."""
    records: dict[tuple[str, int], GenerationRecord] = {}
    not_expressible: dict[str, str] = {}
    every_arm = tuple(dict.fromkeys((*arms, "hook", "unsteered")))
    sizes_text = ", ".join(str(size) for size in sizes)
    with progress.bar("correctness pass", total=len(every_arm) * len(sizes)):
        for arm in every_arm:
            entry = ARMS.get(arm)
            started, compiled_before = _now(), floor_compile_seconds(context)
            if arm == "floor":
                progress.line(f"correctness pass: floor at {sizes_text} new tokens (compiles on its first call) ...")
            else:
                progress.step(f"correctness pass: {arm} at {sizes_text} new tokens ...")
            if not entry.deterministic_check:
                configure_determinism(seed, deterministic=False)
            try:
                for size in sizes:
                    records[arm, size] = entry.run(context, input_ids, size, layer)
                    progress.update()
            except NotExpressible as reason:
                not_expressible[arm] = str(reason)
            finally:
                if not entry.deterministic_check:
                    configure_determinism(seed, deterministic=True)
            elapsed = _now() - started
            if arm in not_expressible:
                progress.line(f"correctness pass: {arm} not expressible here ({elapsed:.1f} s)")
            elif arm == "floor":
                compiled = floor_compile_seconds(context) - compiled_before
                progress.line(f"correctness pass: floor done in {elapsed:.1f} s, {compiled:.1f} s of it compiling")
            else:
                progress.step(f"correctness pass: {arm} done in {elapsed:.1f} s")
    return _Correctness(records, not_expressible)


@dataclass(slots=True)
class _SizeTiming:
    """The rounds of one size as they accumulate, the timed runs whose ids differ from the correctness pass, and
    whether the budget's end stopped the rounds (before the cells had all they were to get)."""

    measurements: dict[str, list[Measurement]]
    mismatches: dict[str, int]
    stopped_by_budget: bool = False
    full_round_s: list[float] = field(default_factory=list)  # seconds of the rounds that ran every arm

    @property
    def timed_rounds(self) -> int:
        return max((len(values) for values in self.measurements.values()), default=0)


@dataclass(frozen=True, slots=True)
class _Window:
    """When one size's rounds may run, as readings of :data:`_now` (seconds).

    ``min_rounds``: timed rounds every cell gets unless ``budget_end`` comes first; ``extra_until``: no round
    beyond those ends after this (the size's share of the spare budget); ``budget_end``: no round ends after this
    (the whole sweep's budget); ``first_round_s``: the estimated seconds of the size's first round (0: unknown,
    the round is started whatever the budget, as the first measurement of the pace); ``reserve_from``: once the
    size has :data:`ROUNDS_UNDER_BUDGET` rounds, no round ends after this, which leaves the larger sizes still
    planned their fewest rounds when this one runs slower than its plan (a machine getting busier).
    """

    min_rounds: int
    extra_until: float
    budget_end: float
    first_round_s: float = 0.0
    reserve_from: float = math.inf


def _time_size(
    context: SteeringContext,
    input_ids: torch.Tensor,
    config: BenchConfig,
    size: int,
    expected: dict[tuple[str, int], GenerationRecord],
    window: _Window,
    method: str,
    progress: Progress,
) -> _SizeTiming:
    """Warm-up, then interleaved rounds at one size until every arm's median CI meets the target (after
    ``window.min_rounds``) or an arm reaches ``max_rounds``; no round starts that would end past
    ``window.budget_end``, nor past ``window.extra_until`` once the minimum is in (a round is predicted to take as
    long as the one before it).

    Arms alternate order each round so drift hits all of them alike; an arm that has met the target stops
    getting rounds, so the budget goes to the cells that need it. ``method`` is :func:`memory_method`'s answer.
    """
    timing = _SizeTiming({arm: [] for arm in config.arms}, dict.fromkeys(config.arms, 0))
    active = config.arms
    round_index = 0
    last_round_s = window.first_round_s
    while active:
        if _now() + last_round_s > window.budget_end:
            timing.stopped_by_budget = round_index - config.warmup < window.min_rounds
            break
        round_started = _now()
        order = active if round_index % 2 == 0 else tuple(reversed(active))
        for arm in order:
            call = partial(ARMS.get(arm).run, context, input_ids, size, config.layer)
            record, measured = measure(call, context.device, method)
            if round_index >= config.warmup:
                timing.measurements[arm].append(measured)
                timing.mismatches[arm] += record.generated_ids != expected[arm, size].generated_ids
            progress.update()
        last_round_s = _now() - round_started
        if active == config.arms:
            timing.full_round_s.append(last_round_s)
        round_index += 1
        timed_rounds = round_index - config.warmup
        if timed_rounds < 1:
            continue
        active = tuple(
            arm for arm in active if _wants_more(config, timing.measurements[arm], timed_rounds, window.min_rounds)
        )
        if timed_rounds >= window.min_rounds and _now() + last_round_s > window.extra_until:
            break
        if timed_rounds >= min(ROUNDS_UNDER_BUDGET, window.min_rounds) and _now() + last_round_s > window.reserve_from:
            timing.stopped_by_budget = timed_rounds < window.min_rounds
            break
        progress.note(
            f"timing {size} new tokens: round {timed_rounds}, {len(active)} arm(s) not yet within "
            f"+-{config.target:.0%}, {last_round_s:.1f} s per round"
        )
    return timing


def _wants_more(config: BenchConfig, measurements: list[Measurement], timed_rounds: int, min_rounds: int) -> bool:
    """An arm gets another round until it has ``min_rounds`` and its median CI meets the target, or has
    ``max_rounds``."""
    if len(measurements) >= config.max_rounds:
        return False
    return timed_rounds < min_rounds or not summarize([m.wall_s for m in measurements]).meets(config.target)


def _cells(
    config: BenchConfig,
    size: int,
    expected: dict[tuple[str, int], GenerationRecord],
    timing: _SizeTiming,
    tolerance: tuple[float, float],
) -> list[ArmResult]:
    """The results of one size: timing stats beside the correctness of the deterministic pass."""
    stats = {arm: summarize([m.wall_s for m in values]) for arm, values in timing.measurements.items()}
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
                measurements=tuple(timing.measurements[arm]),
                target=config.target,
                generated_ids=record.generated_ids,
                logits_sha256=tensor_sha256(record.step_logits),
                ids_match_hook=record.generated_ids == hook.generated_ids if steered else None,
                logits_vs_hook=compare_tensors(record.step_logits, hook.step_logits, *tolerance) if steered else None,
                steering_applied=record.generated_ids != unsteered.generated_ids if steered else None,
                timed_ids_mismatches=timing.mismatches[arm],
                ratio_to_hook=_ratio(stats, arm, "hook"),
                ratio_to_unsteered=_ratio(stats, arm, "unsteered"),
                paired_to_hook=_paired_ratios(timing.measurements, arm, "hook"),
            )
        )
    return cells


def _budget_shares(sizes: tuple[int, ...]) -> dict[int, float]:
    """Each size's share of the timing budget, in proportion to its tokens (+1 for the prefill): longer
    generations cost more per round, so they get more seconds to reach the same precision."""
    total = sum(size + 1 for size in sizes)
    return {size: (size + 1) / total for size in sizes}


def run_bench(
    config: ValidBenchConfig,
    progress: bool = True,
    say: Callable[[str], None] | None = None,
    on_cells: Callable[[list[ArmResult]], None] | None = None,
    device: torch.device | None = None,
) -> BenchReport:
    """Load the model, check every arm against the hook, then time the sweep one size at a time.

    ``on_cells`` receives each size's results as soon as they exist (to log them before the next size runs).
    ``progress``: a bar on a terminal, else a line every few seconds of a long step (see :mod:`.progress`);
    ``say`` gets the status lines either way. Unused budget of one size carries over to the next.
    """
    shown = Progress.for_stderr(say, progress)
    with shown.watchdog():
        return _run_bench(config, shown, on_cells, device)


def _run_bench(
    config: ValidBenchConfig,
    shown: Progress,
    on_cells: Callable[[list[ArmResult]], None] | None,
    device: torch.device | None,
) -> BenchReport:
    where = device if device is not None else resolve_device(config.device)
    config = for_device(config, cuda=where.type == "cuda")  # the job has done it; a library caller may not have
    prepared = prepare_run(config.model or DEFAULT_MODEL, where, config.dtype, config.seed, say=shown.line)
    correctness_determinism, device, context = prepared.determinism, prepared.device, prepared.context
    input_ids = context.encode(config.prompt)
    prompt_length = int(input_ids.shape[1])
    sizes = tuple(sorted({*(config.new_tokens or ()), *((1,) if config.measure_prefill else ())}))
    config = replace(config, layer=_check_fits(config, context, prompt_length))

    shown.line(f"correctness pass (deterministic kernels): {len(config.arms)} arms x {list(sizes)} new tokens")
    started = _now()
    correctness = _correctness_pass(context, input_ids, sizes, config.arms, config.layer, config.seed, shown)
    shown.line(f"correctness pass: {_now() - started:.1f} s")
    expected = correctness.records
    for arm, reason in correctness.not_expressible.items():
        shown.line(f"{arm}: not expressible here, not timed: {reason}")
    timed_config = replace(config, arms=tuple(a for a in config.arms if a not in correctness.not_expressible))
    timing_determinism = configure_determinism(config.seed, deterministic=False)
    shown.line(
        f"timing (default kernels, {torch.get_num_threads()} torch threads): "
        f"{config.warmup} warm-up + at least {config.rounds} rounds per cell, more until the median's 95% CI is "
        f"within +-{config.target:.0%} (at most {config.max_rounds}); budget {config.budget_s:.0f} s for the "
        "timing: no round starts that would end past it, and a plan after the first size says what fits"
    )
    tolerance = LOGITS_TOLERANCE[context.dtype]
    results: list[ArmResult] = []
    method = memory_method(device)
    monitor = LoadMonitor(torch.get_num_threads())
    started = _now()
    planner = _Planner(timed_config, sizes, started + config.budget_s, shown)
    with shown.bar("bench runs"):
        try:
            for size in sizes:
                window = planner.window(size)
                if window is None:
                    continue
                shown.step(
                    f"timing {size} new tokens: {len(timed_config.arms)} arms, {timed_config.warmup} warm-up + at "
                    f"least {window.min_rounds} rounds, {window.budget_end - _now():.0f} s of the budget left ..."
                )
                timing = _time_size(context, input_ids, timed_config, size, expected, window, method, shown)
                planner.record(size, timing, window)
                if timing.timed_rounds == 0:
                    continue
                cells = _cells(timed_config, size, expected, timing, tolerance)
                results.extend(cells)
                shown.line(
                    f"timed {size} new tokens: "
                    + ", ".join(
                        f"{cell.arm} {cell.stats.median_s * 1e3:.1f} ms"
                        f" (n={cell.stats.n}{', ' + cell.precision_note if cell.precision_note else ''})"
                        for cell in cells
                    )
                )
                if on_cells is not None:
                    on_cells(cells)
        finally:
            configure_determinism(config.seed, deterministic=True)
    timing_seconds = _now() - started
    load = monitor.stop()
    warning = load.warning()
    if warning:
        shown.line(warning)
    return BenchReport(
        config=timed_config,
        results=tuple(results),
        environment=environment_info(device),
        determinism=BenchDeterminism(correctness_determinism, timing_determinism),
        architecture=context.architecture,
        prompt_length=prompt_length,
        load=load,
        memory_method=method,
        timing_seconds=timing_seconds,
        not_expressible=correctness.not_expressible,
        compile_seconds=floor_compile_seconds(context) if "floor" in timed_config.arms else None,
        plans=tuple(planner.plans),
        not_timed=dict(planner.not_timed),
        budget_notes=tuple(planner.notes),
    )


@dataclass(slots=True)
class _Planner:
    """The budget's bookkeeping across sizes: the pace measured so far, the plans made from it, and the sizes it
    left out. ``budget_end`` is a reading of :data:`_now`."""

    config: BenchConfig
    sizes: tuple[int, ...]
    budget_end: float
    progress: Progress
    seconds_per_token: float | None = None
    plans: list[TimingPlan] = field(default_factory=list)
    not_timed: dict[int, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def window(self, size: int) -> _Window | None:
        """When ``size`` may run, from a fresh plan of the sizes still to time; None when the plan drops it.

        The first size (the smallest: 1 token with the prefill split) runs before any pace is known, within its
        share of the budget; its first round always runs: it is the first measurement of the pace."""
        if size in self.not_timed:  # an earlier plan dropped it, and said so
            return None
        now = _now()
        remaining = self.budget_end - now
        pending = tuple(s for s in self.sizes if s >= size and s not in self.not_timed)
        shares = _budget_shares(self.sizes)
        if self.seconds_per_token is None:
            share = shares[size] / sum(shares[s] for s in pending)
            return _Window(self.config.rounds, now + max(remaining, 0.0) * share, self.budget_end)
        plan = plan_timing(pending, self.seconds_per_token, remaining, self.config.rounds, self.config.warmup)
        previous = self.plans[-1] if self.plans else None
        if previous is None or (plan.sizes, plan.rounds) != (previous.sizes, previous.rounds):
            self.progress.line(plan.describe())
        self.plans.append(plan)
        if size not in plan.sizes:
            # Dropped at its own turn only: a larger size a plan drops is planned again when its turn comes, from
            # the pace measured by then (the first pace, from 1 token, carries the whole prefill per token).
            self.not_timed[size] = (
                f"the budget: {plan.seconds_for((size,), min(ROUNDS_UNDER_BUDGET, plan.rounds)):.0f} s needed at "
                f"the pace of {plan.seconds_per_token * 1e3:.1f} ms per new token, not left after the smaller sizes"
            )
            return None
        reserved = plan.seconds_for(plan.sizes, plan.rounds)
        share = shares[size] / sum(shares[s] for s in plan.sizes)
        own = plan.seconds_for((size,), plan.rounds)
        extra_until = now + own + max(remaining - reserved, 0.0) * share
        later = tuple(s for s in plan.sizes if s > size)
        reserve_from = self.budget_end - plan.seconds_for(later, min(ROUNDS_UNDER_BUDGET, plan.rounds))
        return _Window(
            plan.rounds, extra_until, self.budget_end, round_seconds(self.seconds_per_token, size), reserve_from
        )

    def record(self, size: int, timing: _SizeTiming, window: _Window) -> None:
        """Take the pace from ``size``'s rounds (the sum over arms of their median seconds, per new token: arms
        that met the target early leave later rounds shorter, so the rounds' own lengths would understate it), and
        note a size the budget cut short."""
        medians = [summarize([m.wall_s for m in values]).median_s for values in timing.measurements.values() if values]
        if medians and len(medians) == len(timing.measurements):
            self.seconds_per_token = sum(medians) / size
        elif timing.full_round_s:  # only warm-up rounds ran: the pace of the slowest (an overestimate, the safe side)
            self.seconds_per_token = max(timing.full_round_s) / size
        if timing.timed_rounds == 0:
            self.not_timed[size] = "the budget ended before its first timed round"
            self.progress.line(f"timing {size} new tokens: {self.not_timed[size]}")
        elif timing.stopped_by_budget:
            note = (
                f"{size} new tokens: the budget ended the timing after {timing.timed_rounds} of "
                f"{window.min_rounds} rounds (CI of the median: {ci_label(timing.timed_rounds)})"
            )
            self.notes.append(note)
            self.progress.line(note)


def _paired_ratios(measurements: dict[str, list[Measurement]], arm: str, baseline: str) -> TimingStats | None:
    """The median of per-round ratios arm / baseline, with its 95% CI: rounds are interleaved, so round k of both
    ran side by side, and a slow spell of the machine (seen here: every arm 25% slower for two rounds) cancels
    in the ratio though it widens each arm's own CI. Arms only ever stop getting rounds, so their first
    min(n_arm, n_baseline) rounds are the paired ones. None without the baseline or with no pair."""
    if baseline not in measurements or arm == baseline:
        return None
    pairs = list(zip(measurements[arm], measurements[baseline], strict=False))
    ratios = [a.wall_s / b.wall_s for a, b in pairs if b.wall_s > 0]
    return summarize(ratios) if ratios else None


def _ratio(stats: dict[str, TimingStats], arm: str, baseline: str) -> float | None:
    """Median over the baseline's median in the same run, or None when the baseline was not timed."""
    if baseline not in stats or stats[baseline].median_s <= 0:
        return None
    return stats[arm].median_s / stats[baseline].median_s
