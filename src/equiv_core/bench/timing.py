"""Adaptive interleaved timing, one size at a time within the budget: rounds of every arm in alternating order
until each cell's median CI meets the target or its rounds run out, and the planner that turns the pace measured
so far into each size's window (see :mod:`equiv_core.bench.budget`). What it calls (the arms, the measured call,
the clock) comes in a :class:`Runner`, so tests script them without patching module globals."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.steering import GenerationRecord
from equiv_core.bench.arms import ARMS, Arm
from equiv_core.bench.budget import ROUNDS_UNDER_BUDGET, TimingPlan, plan_timing, round_seconds
from equiv_core.bench.statistics import ci_label, summarize
from equiv_core.bench.timer import Measurement, measure
from equiv_core.config.bench import BenchConfig
from equiv_core.support.progress import Progress
from equiv_core.support.registry import Registry

Measure = Callable[[Callable[[], GenerationRecord], torch.device, str], tuple[GenerationRecord, Measurement]]


@dataclass(frozen=True, slots=True)
class Runner:
    """What the timing calls: the ``arms`` registry, ``measure`` (one measured call, :func:`~.timer.measure`) and
    ``now`` (the budget's clock: seconds, monotonic)."""

    arms: Registry[Arm] = ARMS
    measure: Measure = measure
    now: Callable[[], float] = time.monotonic


REAL = Runner()  # the registered arms, the real measured call, the real clock


@dataclass(slots=True)
class SizeTiming:
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
class Window:
    """When one size's rounds may run, as readings of the runner's clock (seconds).

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


def time_size(
    context: SteeringContext,
    input_ids: torch.Tensor,
    config: BenchConfig,
    size: int,
    expected: dict[tuple[str, int], GenerationRecord],
    window: Window,
    method: str,
    progress: Progress,
    runner: Runner = REAL,
) -> SizeTiming:
    """Warm-up, then interleaved rounds at one size until every arm's median CI meets the target (after
    ``window.min_rounds``) or an arm reaches ``max_rounds``; no round starts that would end past
    ``window.budget_end``, nor past ``window.extra_until`` once the minimum is in (a round is predicted to take as
    long as the one before it).

    Arms alternate order each round so drift hits all of them alike; an arm that has met the target stops
    getting rounds, so the budget goes to the cells that need it. ``method`` is :func:`memory_method`'s answer.
    """
    timing = SizeTiming({arm: [] for arm in config.arms}, dict.fromkeys(config.arms, 0))
    active = config.arms
    round_index = 0
    last_round_s = window.first_round_s
    while active:
        if runner.now() + last_round_s > window.budget_end:
            timing.stopped_by_budget = round_index - config.warmup < window.min_rounds
            break
        round_started = runner.now()
        order = active if round_index % 2 == 0 else tuple(reversed(active))
        for arm in order:
            call = partial(runner.arms.get(arm).run, context, input_ids, size, config.layer)
            record, measured = runner.measure(call, context.device, method)
            if round_index >= config.warmup:
                timing.measurements[arm].append(measured)
                timing.mismatches[arm] += record.generated_ids != expected[arm, size].generated_ids
            progress.update()
        last_round_s = runner.now() - round_started
        if active == config.arms:
            timing.full_round_s.append(last_round_s)
        round_index += 1
        timed_rounds = round_index - config.warmup
        if timed_rounds < 1:
            continue
        active = tuple(
            arm for arm in active if wants_more(config, timing.measurements[arm], timed_rounds, window.min_rounds)
        )
        if timed_rounds >= window.min_rounds and runner.now() + last_round_s > window.extra_until:
            break
        if (
            timed_rounds >= min(ROUNDS_UNDER_BUDGET, window.min_rounds)
            and runner.now() + last_round_s > window.reserve_from
        ):
            timing.stopped_by_budget = timed_rounds < window.min_rounds
            break
        progress.note(
            f"timing {size} new tokens: round {timed_rounds}, {len(active)} arm(s) not yet within "
            f"+-{config.target:.0%}, {last_round_s:.1f} s per round"
        )
    return timing


def wants_more(config: BenchConfig, measurements: list[Measurement], timed_rounds: int, min_rounds: int) -> bool:
    """An arm gets another round until it has ``min_rounds`` and its median CI meets the target, or has
    ``max_rounds``."""
    if len(measurements) >= config.max_rounds:
        return False
    return timed_rounds < min_rounds or not summarize([m.wall_s for m in measurements]).meets(config.target)


def budget_shares(sizes: tuple[int, ...]) -> dict[int, float]:
    """Each size's share of the timing budget, in proportion to its tokens (+1 for the prefill): longer
    generations cost more per round, so they get more seconds to reach the same precision."""
    total = sum(size + 1 for size in sizes)
    return {size: (size + 1) / total for size in sizes}


@dataclass(slots=True)
class Planner:
    """The budget's bookkeeping across sizes: the pace measured so far, the plans made from it, and the sizes it
    left out. ``budget_end`` is a reading of ``now``."""

    config: BenchConfig
    sizes: tuple[int, ...]
    budget_end: float
    progress: Progress
    now: Callable[[], float] = time.monotonic
    seconds_per_token: float | None = None
    plans: list[TimingPlan] = field(default_factory=list)
    not_timed: dict[int, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def window(self, size: int) -> Window | None:
        """When ``size`` may run, from a fresh plan of the sizes still to time; None when the plan drops it.

        The first size (the smallest: 1 token with the prefill split) runs before any pace is known, within its
        share of the budget; its first round always runs: it is the first measurement of the pace."""
        if size in self.not_timed:  # an earlier plan dropped it, and said so
            return None
        now = self.now()
        remaining = self.budget_end - now
        pending = tuple(s for s in self.sizes if s >= size and s not in self.not_timed)
        shares = budget_shares(self.sizes)
        if self.seconds_per_token is None:
            share = shares[size] / sum(shares[s] for s in pending)
            return Window(self.config.rounds, now + max(remaining, 0.0) * share, self.budget_end)
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
        return Window(
            plan.rounds, extra_until, self.budget_end, round_seconds(self.seconds_per_token, size), reserve_from
        )

    def record(self, size: int, timing: SizeTiming, window: Window) -> None:
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
