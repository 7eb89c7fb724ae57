"""What ``equiv bench`` measures, and the checks of it that need no model: importable without torch, so a bad
argument is answered (one line, exit 2) in well under a second."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, NewType

from equiv_core.config.catalog import (
    ATTN_HELP,
    ATTN_IMPLEMENTATIONS,
    BENCH_ARMS,
    BUILTIN_MODEL_INFO,
    DEFAULT_BUDGET_S,
    DEFAULT_MAX_ROUNDS,
    DEFAULT_MIN_ROUNDS,
    DEFAULT_MODEL,
    DEFAULT_PROMPT,
    DTYPE_NAMES,
    TARGET_CI_HALF_WIDTH,
    known_shape,
)
from equiv_core.config.options import DEVICE_HELP, SEED_HELP, csv, csv_ints, option, percent
from equiv_core.config.validation import (
    check_attn_implementation,
    check_device_name,
    check_dtype,
    check_layer,
    check_model_name,
    check_new_tokens_fit,
    check_prompt,
    check_seed,
)
from equiv_core.support.errors import UserInputError
from equiv_core.support.registry import check_name

CPU_NEW_TOKENS = (8, 16, 32)
GPU_NEW_TOKENS = (8, 32, 128, 512)
GPU_DEFAULT_MODEL = "gpt2-small-random"


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """What ``equiv bench`` measures. ``None`` model / new_tokens mean "the default for the device"."""

    model: str | None = option(
        None, "--model", f"model (default: {DEFAULT_MODEL} on CPU, gpt2-small-random when CUDA is used)"
    )
    device: str = option("auto", "--device", DEVICE_HELP)
    dtype: str = option("float32", "--dtype", "model dtype (default: float32)", choices=DTYPE_NAMES)
    attn_implementation: str | None = option(None, "--attn-implementation", ATTN_HELP, choices=ATTN_IMPLEMENTATIONS)
    arms: tuple[str, ...] = option(
        BENCH_ARMS, "--arms", f"comma-separated arms (default: all: {','.join(BENCH_ARMS)})", parse=csv
    )
    new_tokens: tuple[int, ...] | None = option(
        None,
        "--new-tokens",
        "comma-separated sweep of new tokens (default: 8,16,32 on CPU; 8,32,128,512 on GPU)",
        parse=csv_ints,
    )
    # the minimum; more are added until the target or the budget
    rounds: int = option(
        DEFAULT_MIN_ROUNDS,
        "--rounds",
        f"at least this many timed rounds per cell (>= 1, default {DEFAULT_MIN_ROUNDS}: the fewest that give a "
        "95%% CI of the median); more are added until --target-ci or --budget-s",
        parse=int,
    )
    warmup: int = option(1, "--warmup", "untimed warm-up rounds per cell (default 1)", parse=int)
    prompt: str = option(DEFAULT_PROMPT, "--prompt", f"prompt (default: {DEFAULT_PROMPT!r})")
    layer: int = option(0, "--layer", "decoder layer edited (default 0; negatives from the end)", parse=int)
    seed: int = option(0, "--seed", SEED_HELP, parse=int)
    measure_prefill: bool = True  # also time 1-token runs, to split prefill from per-token decode
    max_rounds: int = option(
        DEFAULT_MAX_ROUNDS,
        "--max-rounds",
        f"at most this many timed rounds per cell (>= --rounds, default {DEFAULT_MAX_ROUNDS})",
        parse=int,
    )
    # wanted half-width of the median's 95% CI, as a fraction of the median (written in percent)
    target: float = option(
        TARGET_CI_HALF_WIDTH,
        "--target-ci",
        "stop adding rounds to a cell once its median's 95%% CI is within +-PERCENT of the median "
        f"(0 < PERCENT < 100, default {TARGET_CI_HALF_WIDTH:.0%})".replace("%)", "%%)"),
        parse=percent,
        metavar="PERCENT",
    )
    budget_s: float = option(
        DEFAULT_BUDGET_S,
        "--budget-s",
        f"seconds of timing rounds for the whole sweep, shared by size (> 0, default {DEFAULT_BUDGET_S:.0f}); "
        "cells still short of the target are flagged with the CI they reached",
        parse=float,
        metavar="SECONDS",
    )

    def resolved(self, cuda: bool) -> BenchConfig:
        """Fill the device-dependent defaults: on CUDA (``cuda``: the device resolved to one), gpt2-small-random
        and longer sweeps."""
        model = self.model or (GPU_DEFAULT_MODEL if cuda else DEFAULT_MODEL)
        new_tokens = self.new_tokens or (GPU_NEW_TOKENS if cuda else CPU_NEW_TOKENS)
        return replace(self, model=model, new_tokens=tuple(sorted(set(new_tokens))))

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


# A BenchConfig that validate_bench_config returned (its device-dependent defaults filled by for_device once the
# device is known): what run_bench takes, so it is checked once, at the edge.
ValidBenchConfig = NewType("ValidBenchConfig", BenchConfig)


def for_device(config: ValidBenchConfig, cuda: bool) -> ValidBenchConfig:
    """``config`` with its device-dependent defaults filled (``cuda``: the device resolved to CUDA); a config that
    has them is returned as it is."""
    return ValidBenchConfig(config.resolved(cuda))


def validate_bench_config(config: BenchConfig) -> ValidBenchConfig:
    """``config``, checked before any model work (raises UserInputError naming the valid range)."""
    for arm in config.arms:
        check_name("arm", arm, BENCH_ARMS)
    if not config.arms:
        raise UserInputError(f"no arms given; valid: {', '.join(BENCH_ARMS)}")
    if config.rounds < 1:
        raise UserInputError(f"rounds must be >= 1, got {config.rounds}")
    if config.max_rounds < config.rounds:
        raise UserInputError(f"max rounds must be >= rounds ({config.rounds}), got {config.max_rounds}")
    if not 0 < config.target < 1:
        raise UserInputError(f"--target-ci must be between 0 and 100 percent (exclusive), got {config.target * 100:g}")
    if not config.budget_s > 0:
        raise UserInputError(f"budget must be > 0 seconds, got {config.budget_s:g}")
    if config.warmup < 0:
        raise UserInputError(f"warmup must be >= 0, got {config.warmup}")
    if config.new_tokens is not None and (not config.new_tokens or min(config.new_tokens) < 1):
        raise UserInputError(f"new tokens must each be >= 1, got {list(config.new_tokens)}")
    check_prompt(config.prompt)
    check_seed(config.seed)
    check_dtype(config.dtype)
    check_attn_implementation(config.attn_implementation)
    if config.model is not None:
        check_model_name(config.model, BUILTIN_MODEL_INFO)
    shape = known_shape(config.model or "")
    if shape is not None:
        check_layer(config.layer, shape.num_layers)
        if config.new_tokens:
            check_new_tokens_fit(max(config.new_tokens), config.model or "", shape.max_positions, "--new-tokens")
    check_device_name(config.device)
    return ValidBenchConfig(config)
