"""The timing budget (``--budget-s``): which sizes and how many rounds fit in what is left of it, at the pace the
rounds timed so far were measured at, and the plan said in one line before the sizes it concerns are timed.

Why a plan and not only a deadline: on a busy machine a round can take several times as long as on a quiet one,
and a sweep that promises a budget must then give up something. Which, and how much, is decided here, in
advance, from the measured pace; the sweep (:mod:`equiv_core.bench.sweep`) never starts a round that would end
past the budget. Pure functions of numbers: tested with scripted paces, no clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from equiv_core.bench.statistics import ci_label

ROUNDS_UNDER_BUDGET = 3
"""The fewest timed rounds a plan caps a cell to before it drops sizes instead: the [min, max] range of 3 rounds
is the narrowest spread that still says something (a 75% interval of the median, labelled so)."""


def round_seconds(seconds_per_token: float, new_tokens: int) -> float:
    """Estimated seconds of one round (every timed arm once) at ``new_tokens``: generation runs one forward pass
    per new token (the prompt pass makes the first), so a round's cost is taken as proportional to
    ``new_tokens``. A fixed per-call cost makes this overestimate long sizes from short ones (the safe side)."""
    return seconds_per_token * new_tokens


@dataclass(frozen=True, slots=True)
class TimingPlan:
    """What the rest of the sweep will do, decided from the pace measured so far.

    ``seconds_per_token``: seconds of one round divided by its new tokens, from the latest size timed;
    ``pending``: the sizes still to time when the plan was made (ascending); ``sizes``: those that will be timed;
    ``rounds``: the fewest timed rounds each of their cells gets (``asked_rounds`` unless capped);
    ``needed_s``: what ``pending`` would take at ``asked_rounds`` (plus ``warmup``) at this pace;
    ``remaining_s``: the budget left when planned. All times in seconds.
    """

    seconds_per_token: float
    pending: tuple[int, ...]
    sizes: tuple[int, ...]
    rounds: int
    asked_rounds: int
    warmup: int
    needed_s: float
    remaining_s: float

    @property
    def dropped(self) -> tuple[int, ...]:
        """Sizes left out: even :data:`ROUNDS_UNDER_BUDGET` rounds of them would not fit."""
        return tuple(size for size in self.pending if size not in self.sizes)

    @property
    def fits(self) -> bool:
        """True when the pending sizes fit at the asked rounds (nothing given up)."""
        return not self.dropped and self.rounds >= self.asked_rounds

    def seconds_for(self, sizes: Sequence[int], rounds: int) -> float:
        """Estimated seconds of ``warmup`` + ``rounds`` rounds at each of ``sizes``."""
        return sum((self.warmup + rounds) * round_seconds(self.seconds_per_token, size) for size in sizes)

    def describe(self) -> str:
        """One line: the pace, what the pending sizes need at it, the budget left, and what is given up."""
        sizes = ", ".join(str(size) for size in self.pending)
        head = (
            f"timing plan: at this pace ({self.seconds_per_token * 1e3:.1f} ms per new token per round of all arms) "
            f"{sizes} new tokens need ~{_seconds(self.needed_s)} for {self.warmup} warm-up + {self.asked_rounds} "
            f"rounds per cell; {_seconds(self.remaining_s)} of the budget left: "
        )
        if self.fits:
            return head + "fits"
        actions = []
        if self.rounds < self.asked_rounds and self.sizes:
            actions.append(f"capping rounds at {self.rounds} (CI of the median: {ci_label(self.rounds)})")
        if self.dropped:
            actions.append(f"dropping {', '.join(str(size) for size in self.dropped)} new tokens")
        return head + "; ".join(actions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seconds_per_token": self.seconds_per_token,
            "pending": list(self.pending),
            "sizes": list(self.sizes),
            "dropped": list(self.dropped),
            "rounds": self.rounds,
            "asked_rounds": self.asked_rounds,
            "warmup": self.warmup,
            "needed_s": self.needed_s,
            "remaining_s": self.remaining_s,
            "text": self.describe(),
        }


def _seconds(value: float) -> str:
    """``280 s``, or ``0.4 s`` below 10 s (a whole number would read ``0 s``)."""
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


def plan_timing(
    pending: Sequence[int], seconds_per_token: float, remaining_s: float, rounds: int, warmup: int
) -> TimingPlan:
    """The plan for ``pending`` sizes in ``remaining_s`` seconds at ``seconds_per_token`` (see :class:`TimingPlan`).

    In this order, the first that fits: every size at ``rounds``; every size at fewer rounds, down to
    :data:`ROUNDS_UNDER_BUDGET` (or ``rounds`` if that is fewer); the largest sizes dropped one by one, the
    others at the most rounds (up to ``rounds``) that then fit. Fewer rounds come first because each dropped size
    loses a point of the growth curve, while fewer rounds only widen CIs (and the labels say by how much).
    """
    ordered = tuple(sorted(pending))
    plan = TimingPlan(seconds_per_token, ordered, ordered, rounds, rounds, warmup, 0.0, remaining_s)
    plan = replace(plan, needed_s=plan.seconds_for(ordered, rounds))
    floor = min(ROUNDS_UNDER_BUDGET, rounds)
    kept = ordered
    while kept and plan.seconds_for(kept, floor) > remaining_s:
        kept = kept[:-1]
    most = max((r for r in range(floor, rounds + 1) if plan.seconds_for(kept, r) <= remaining_s), default=floor)
    return replace(plan, sizes=kept, rounds=most)
