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

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.floor import compile_seconds as floor_compile_seconds
from equiv_core.arms.prepare import prepare_run
from equiv_core.arms.steering import GenerationRecord, NotExpressible
from equiv_core.bench.results import ArmResult, BenchDeterminism, BenchReport, size_cells
from equiv_core.bench.timer import memory_method
from equiv_core.bench.timing import REAL, Planner, Runner, time_size
from equiv_core.config.bench import ValidBenchConfig, for_device
from equiv_core.config.catalog import DEFAULT_MODEL
from equiv_core.config.validation import check_fits_context, check_layer, check_prompt_length
from equiv_core.findings.comparison import LOGITS_TOLERANCE
from equiv_core.models.determinism import configure_determinism
from equiv_core.models.load import resolve_device
from equiv_core.models.provenance import environment_info
from equiv_core.support.machine_load import LoadMonitor
from equiv_core.support.progress import Progress


def run_bench(
    config: ValidBenchConfig,
    progress: bool = True,
    say: Callable[[str], None] | None = None,
    on_cells: Callable[[list[ArmResult]], None] | None = None,
    device: torch.device | None = None,
    runner: Runner = REAL,
) -> BenchReport:
    """Load the model, check every arm against the hook, then time the sweep one size at a time.

    ``on_cells`` receives each size's results as soon as they exist (to log them before the next size runs).
    ``progress``: a bar on a terminal, else a line every few seconds of a long step (see :mod:`.progress`);
    ``say`` gets the status lines either way. Unused budget of one size carries over to the next.
    """
    shown = Progress.for_stderr(say, progress)
    with shown.watchdog():
        return _run_bench(config, shown, on_cells, device, runner)


def _run_bench(
    config: ValidBenchConfig,
    shown: Progress,
    on_cells: Callable[[list[ArmResult]], None] | None,
    device: torch.device | None,
    runner: Runner,
) -> BenchReport:
    where = device if device is not None else resolve_device(config.device)
    config = for_device(config, cuda=where.type == "cuda")  # the job has done it; a library caller may not have
    prepared = prepare_run(
        config.model or DEFAULT_MODEL,
        where,
        config.dtype,
        config.seed,
        say=shown.line,
        attn_implementation=config.attn_implementation,
    )
    correctness_determinism, device, context = prepared.determinism, prepared.device, prepared.context
    input_ids = context.encode(config.prompt)
    prompt_length = int(input_ids.shape[1])
    sizes = tuple(sorted({*(config.new_tokens or ()), *((1,) if config.measure_prefill else ())}))
    config = replace(config, layer=_check_fits(config, context, prompt_length))

    shown.line(f"correctness pass (deterministic kernels): {len(config.arms)} arms x {list(sizes)} new tokens")
    started = runner.now()
    correctness = _correctness_pass(context, input_ids, sizes, config, shown, runner)
    shown.line(f"correctness pass: {runner.now() - started:.1f} s")
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
    started = runner.now()
    planner = Planner(timed_config, sizes, started + config.budget_s, shown, runner.now)
    with shown.bar("bench runs"):
        try:
            for size in sizes:
                window = planner.window(size)
                if window is None:
                    continue
                shown.step(
                    f"timing {size} new tokens: {len(timed_config.arms)} arms, {timed_config.warmup} warm-up + at "
                    f"least {window.min_rounds} rounds, {window.budget_end - runner.now():.0f} s of the budget left ..."
                )
                timing = time_size(context, input_ids, timed_config, size, expected, window, method, shown, runner)
                planner.record(size, timing, window)
                if timing.timed_rounds == 0:
                    continue
                cells = size_cells(timed_config, size, expected, timing.measurements, timing.mismatches, tolerance)
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
    timing_seconds = runner.now() - started
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


def _check_fits(config: ValidBenchConfig, context: SteeringContext, prompt_length: int) -> int:
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
    config: ValidBenchConfig,
    progress: Progress,
    runner: Runner,
) -> _Correctness:
    """One run of every arm at every size, plus hook and unsteered even when they are not timed; deterministic
    kernels except for arms that say otherwise (``floor``: compiled once, with the kernels it is timed with).

    Arm by arm, each with a line before and after (``floor``'s with its compile seconds, in every mode: compiling
    is the longest step of a first run); on a terminal the per-arm lines give way to a bar."""
    records: dict[tuple[str, int], GenerationRecord] = {}
    not_expressible: dict[str, str] = {}
    arms, layer, seed = config.arms, config.layer, config.seed
    every_arm = tuple(dict.fromkeys((*arms, "hook", "unsteered")))
    sizes_text = ", ".join(str(size) for size in sizes)
    with progress.bar("correctness pass", total=len(every_arm) * len(sizes)):
        for arm in every_arm:
            entry = runner.arms.get(arm)
            started, compiled_before = runner.now(), floor_compile_seconds(context)
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
            elapsed = runner.now() - started
            if arm in not_expressible:
                progress.line(f"correctness pass: {arm} not expressible here ({elapsed:.1f} s)")
            elif arm == "floor":
                compiled = floor_compile_seconds(context) - compiled_before
                progress.line(f"correctness pass: floor done in {elapsed:.1f} s, {compiled:.1f} s of it compiling")
            else:
                progress.step(f"correctness pass: {arm} done in {elapsed:.1f} s")
    return _Correctness(records, not_expressible)
