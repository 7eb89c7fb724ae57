"""The benchmark: a correctness pass in deterministic mode, then interleaved timing rounds with default kernels.

Why two passes: deterministic kernels make equivalence checks bit-reproducible but can be slower; timing with
them would misstate the cost users see. Every record says which pass each of its numbers came from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import torch
from tqdm import tqdm

from equiv_core.bench.arms import ARMS, DEFAULT_ARMS
from equiv_core.bench.statistics import TimingStats, growth_exponent, summarize
from equiv_core.bench.timer import timed
from equiv_core.catalog import DEFAULT_MODEL, DEFAULT_PROMPT, known_shape
from equiv_core.comparison import LOGITS_TOLERANCE, TensorComparison, compare_tensors, tensor_sha256
from equiv_core.context import SteeringContext
from equiv_core.determinism import configure_determinism
from equiv_core.errors import UserInputError
from equiv_core.models import resolve_device, resolve_dtype
from equiv_core.prepare import prepare_run
from equiv_core.provenance import environment_info
from equiv_core.steering import GenerationRecord
from equiv_core.validation import check_fits_context, check_layer, check_prompt, check_prompt_length, check_seed

CPU_NEW_TOKENS = (8, 16, 32)
GPU_NEW_TOKENS = (8, 32, 128, 512)
GPU_DEFAULT_MODEL = "gpt2-small-random"


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """What ``equiv bench`` measures. ``None`` model / new_tokens mean "the default for the device"."""

    model: str | None = None
    device: str = "auto"
    dtype: str = "float32"
    arms: tuple[str, ...] = DEFAULT_ARMS
    new_tokens: tuple[int, ...] | None = None
    rounds: int = 10
    warmup: int = 1
    prompt: str = DEFAULT_PROMPT
    layer: int = 0
    seed: int = 0
    measure_prefill: bool = True  # also time 1-token runs, to split prefill from per-token decode

    def resolved(self) -> BenchConfig:
        """Fill the device-dependent defaults: on CUDA, gpt2-small-random and longer sweeps."""
        cuda = resolve_device(self.device).type == "cuda"
        model = self.model or (GPU_DEFAULT_MODEL if cuda else DEFAULT_MODEL)
        new_tokens = self.new_tokens or (GPU_NEW_TOKENS if cuda else CPU_NEW_TOKENS)
        return BenchConfig(
            model,
            self.device,
            self.dtype,
            self.arms,
            tuple(sorted(set(new_tokens))),
            self.rounds,
            self.warmup,
            self.prompt,
            self.layer,
            self.seed,
            self.measure_prefill,
        )

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class ArmResult:
    """One (arm, new_tokens) cell: timing (default kernels) beside correctness (deterministic pass)."""

    arm: str
    new_tokens: int
    stats: TimingStats
    generated_ids: tuple[int, ...]
    logits_sha256: str
    ids_match_hook: bool | None
    logits_vs_hook: TensorComparison | None
    steering_applied: bool | None
    timed_ids_mismatches: int
    ratio_to_hook: float | None = None
    ratio_to_unsteered: float | None = None

    @property
    def status(self) -> str:
        """``ok``, or why this arm's speed must not be read as the cost of correct steering."""
        if self.steering_applied is False:
            return "steering not applied"
        if self.ids_match_hook is False:
            return "ids differ from hook"
        return "ok" if ARMS.get(self.arm).steered else "baseline"

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
            "noisy": self.stats.noisy,
            "ratio_to_hook": self.ratio_to_hook,
            "ratio_to_unsteered": self.ratio_to_unsteered,
            "ids_match_hook": self.ids_match_hook,
            "logits_bit_identical_to_hook": None if self.logits_vs_hook is None else self.logits_vs_hook.bit_identical,
            "logits_max_abs_diff": None if self.logits_vs_hook is None else self.logits_vs_hook.max_abs_diff,
            "logits_sha256": self.logits_sha256,
            "steering_applied": self.steering_applied,
            "status": self.status,
            "generated_ids": list(self.generated_ids),
            "timed_ids_mismatches": self.timed_ids_mismatches,
            "timing_mode": "default kernels",
            "correctness_mode": "deterministic kernels",
        }


@dataclass(frozen=True, slots=True)
class BenchReport:
    """All cells of one benchmark run, with growth exponents and provenance."""

    config: BenchConfig
    results: tuple[ArmResult, ...]
    environment: dict[str, Any]
    determinism: dict[str, Any]
    architecture: dict[str, Any]
    prompt_length: int
    extra: dict[str, Any] = field(default_factory=dict)

    def cell(self, arm: str, new_tokens: int) -> ArmResult | None:
        return next((r for r in self.results if r.arm == arm and r.new_tokens == new_tokens), None)

    def growth_exponents(self) -> dict[str, float | None]:
        """Per arm, the log-log slope of median time against new tokens over the requested sweep."""
        sizes = list(self.config.new_tokens or ())
        exponents = {}
        for arm in self.config.arms:
            cells = [self.cell(arm, size) for size in sizes]
            exponents[arm] = growth_exponent(sizes, [c.stats.median_s for c in cells if c is not None])
        return exponents

    def prefill_split(self) -> dict[str, dict[str, float]]:
        """Per arm: prefill seconds (median of 1-token runs) and decode seconds per token at the longest sweep."""
        split = {}
        longest = max(self.config.new_tokens or (1,))
        for arm in self.config.arms:
            prefill, longest_cell = self.cell(arm, 1), self.cell(arm, longest)
            if prefill is None or longest_cell is None or longest <= 1:
                continue
            decode = (longest_cell.stats.median_s - prefill.stats.median_s) / (longest - 1)
            split[arm] = {"prefill_s": prefill.stats.median_s, "decode_per_token_s": decode, "at_new_tokens": longest}
        return split

    @property
    def all_correct(self) -> bool:
        return all(result.status in ("ok", "baseline") for result in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.config.model,
            "device": self.environment.get("device"),
            "dtype": self.config.dtype,
            "prompt": self.config.prompt,
            "prompt_length": self.prompt_length,
            "config": self.config.to_dict(),
            "architecture": self.architecture,
            "environment": self.environment,
            "determinism": self.determinism,
            "growth_exponents": self.growth_exponents(),
            "prefill_split": self.prefill_split(),
            "all_correct": self.all_correct,
            "records": [result.to_dict() for result in self.results],
            **self.extra,
        }


def validate_bench_config(config: BenchConfig) -> None:
    """Reject bad arguments before any model work, naming the valid range."""
    for arm in config.arms:
        ARMS.get(arm)
    if not config.arms:
        raise UserInputError(f"no arms given; valid: {', '.join(ARMS.names())}")
    if config.rounds < 1:
        raise UserInputError(f"rounds must be >= 1, got {config.rounds}")
    if config.warmup < 0:
        raise UserInputError(f"warmup must be >= 0, got {config.warmup}")
    if config.new_tokens is not None and (not config.new_tokens or min(config.new_tokens) < 1):
        raise UserInputError(f"new tokens must each be >= 1, got {list(config.new_tokens)}")
    check_prompt(config.prompt)
    check_seed(config.seed)
    resolve_dtype(config.dtype)
    shape = known_shape(config.model or "")
    if shape is not None:
        check_layer(config.layer, shape.num_layers)
    resolve_device(config.device)


def _check_fits(config: BenchConfig, context: SteeringContext, prompt_length: int) -> int:
    """The checks that need the loaded model; returns the absolute layer."""
    check_prompt_length(config.prompt, prompt_length)
    check_fits_context(prompt_length, max(config.new_tokens or (1,)), context.architecture.max_positions, "new tokens")
    return check_layer(config.layer, context.architecture.num_layers)


def _correctness_pass(
    context: SteeringContext, input_ids: torch.Tensor, sizes: tuple[int, ...], arms: tuple[str, ...], layer: int
) -> dict[tuple[str, int], GenerationRecord]:
    """One deterministic run of every arm, plus hook and unsteered even when they are not timed."""
    records = {}
    for size in sizes:
        for arm in dict.fromkeys((*arms, "hook", "unsteered")):
            records[arm, size] = ARMS.get(arm).run(context, input_ids, size, layer)
    return records


def _time_size(
    context: SteeringContext,
    input_ids: torch.Tensor,
    config: BenchConfig,
    size: int,
    expected: dict[tuple[str, int], GenerationRecord],
    bar: Any,
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Warm-up, then timed rounds of every arm at one size; arms alternate order each round so drift hits all
    of them alike. Also counts timed runs whose ids differ from the correctness pass."""
    samples: dict[str, list[float]] = {arm: [] for arm in config.arms}
    mismatches = dict.fromkeys(config.arms, 0)
    for round_index in range(config.warmup + config.rounds):
        order = config.arms if round_index % 2 == 0 else tuple(reversed(config.arms))
        for arm in order:
            bar.set_postfix_str(f"{arm} x{size}")
            call = partial(ARMS.get(arm).run, context, input_ids, size, config.layer)
            record, seconds = timed(call, context.device)
            if round_index >= config.warmup:
                samples[arm].append(seconds)
                mismatches[arm] += record.generated_ids != expected[arm, size].generated_ids
            bar.update()
    return samples, mismatches


def _cells(
    config: BenchConfig,
    size: int,
    expected: dict[tuple[str, int], GenerationRecord],
    samples: dict[str, list[float]],
    mismatches: dict[str, int],
    tolerance: tuple[float, float],
) -> list[ArmResult]:
    """The results of one size: timing stats beside the correctness of the deterministic pass."""
    stats = {arm: summarize(values) for arm, values in samples.items()}
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
                generated_ids=record.generated_ids,
                logits_sha256=tensor_sha256(record.step_logits),
                ids_match_hook=record.generated_ids == hook.generated_ids if steered else None,
                logits_vs_hook=compare_tensors(record.step_logits, hook.step_logits, *tolerance) if steered else None,
                steering_applied=record.generated_ids != unsteered.generated_ids if steered else None,
                timed_ids_mismatches=mismatches[arm],
                ratio_to_hook=_ratio(stats, arm, "hook"),
                ratio_to_unsteered=_ratio(stats, arm, "unsteered"),
            )
        )
    return cells


def run_bench(
    config: BenchConfig,
    progress: bool = True,
    say: Callable[[str], None] | None = None,
    on_cells: Callable[[list[ArmResult]], None] | None = None,
) -> BenchReport:
    """Load the model, check every arm against the hook, then time the sweep one size at a time.

    ``on_cells`` receives each size's results as soon as they exist (to log them before the next size runs).
    """
    report_line = say or (lambda _message: None)
    validate_bench_config(config)
    config = config.resolved()
    prepared = prepare_run(config.model or DEFAULT_MODEL, config.device, config.dtype, config.seed, say=say)
    correctness_determinism, device, context = prepared.determinism, prepared.device, prepared.context
    input_ids = context.encode(config.prompt)
    prompt_length = int(input_ids.shape[1])
    sizes = tuple(sorted({*(config.new_tokens or ()), *((1,) if config.measure_prefill else ())}))
    config = replace(config, layer=_check_fits(config, context, prompt_length))

    report_line(f"correctness pass (deterministic kernels): {len(config.arms)} arms x {list(sizes)} new tokens")
    expected = _correctness_pass(context, input_ids, sizes, config.arms, config.layer)
    timing_determinism = configure_determinism(config.seed, deterministic=False)
    report_line(f"timing: {config.warmup} warm-up + {config.rounds} rounds per size (default kernels)")
    tolerance = LOGITS_TOLERANCE[context.dtype]
    total = (config.warmup + config.rounds) * len(sizes) * len(config.arms)
    results: list[ArmResult] = []
    # On a terminal only (disable=None): in logs, a redrawn bar is noise; the per-size lines say enough.
    with tqdm(
        total=total,
        desc="bench rounds",
        unit="run",
        disable=None if progress else True,
        mininterval=0.5,
        dynamic_ncols=True,
    ) as bar:
        try:
            for size in sizes:
                samples, mismatches = _time_size(context, input_ids, config, size, expected, bar)
                cells = _cells(config, size, expected, samples, mismatches, tolerance)
                results.extend(cells)
                report_line(
                    f"timed {size} new tokens: "
                    + ", ".join(f"{cell.arm} {cell.stats.median_s * 1e3:.1f} ms" for cell in cells)
                )
                if on_cells is not None:
                    on_cells(cells)
        finally:
            configure_determinism(config.seed, deterministic=True)
    return BenchReport(
        config=config,
        results=tuple(results),
        environment=environment_info(device),
        determinism={"correctness": correctness_determinism.to_dict(), "timing": timing_determinism.to_dict()},
        architecture=context.architecture.to_dict(),
        prompt_length=prompt_length,
    )


def _ratio(stats: dict[str, TimingStats], arm: str, baseline: str) -> float | None:
    """Median over the baseline's median in the same run, or None when the baseline was not timed."""
    if baseline not in stats or stats[baseline].median_s <= 0:
        return None
    return stats[arm].median_s / stats[baseline].median_s
