"""The timing budget's plan on scripted paces: what fits, which rounds are capped, which sizes dropped, and the
line that says so. No clock: a plan is a function of the pace and the seconds left."""

from __future__ import annotations

import pytest

from equiv_core.bench.budget import plan_timing, round_seconds


def test_a_rounds_estimate_is_proportional_to_the_new_tokens() -> None:
    assert round_seconds(0.05, 32) == pytest.approx(1.6)


def test_what_fits_is_planned_as_asked() -> None:
    """1 s per new token per round: 8 and 32 tokens at 1 warm-up + 6 rounds need 7 x 40 = 280 s."""
    plan = plan_timing((8, 32), seconds_per_token=1.0, remaining_s=280.0, rounds=6, warmup=1)
    assert (plan.sizes, plan.rounds, plan.fits, plan.needed_s) == ((8, 32), 6, True, 280.0)


def test_over_budget_the_rounds_are_capped_at_the_most_that_fit() -> None:
    """7 x 40 = 280 s needed, 200 s left: 1 + 4 rounds (200 s) fit, 1 + 5 (240 s) do not."""
    plan = plan_timing((8, 32), seconds_per_token=1.0, remaining_s=200.0, rounds=6, warmup=1)
    assert (plan.sizes, plan.rounds) == ((8, 32), 4)


def test_sizes_are_dropped_largest_first_only_when_the_fewest_rounds_do_not_fit() -> None:
    """1 + 3 rounds of 8 and 32 need 160 s, 100 s left: 32 goes, and 8 alone gets 1 + 6 rounds (56 s)."""
    plan = plan_timing((8, 32), seconds_per_token=1.0, remaining_s=100.0, rounds=6, warmup=1)
    assert (plan.sizes, plan.dropped, plan.rounds) == ((8,), (32,), 6)


def test_a_size_is_dropped_rather_than_given_fewer_rounds_than_the_floor() -> None:
    """8 and 16 at 1 + 3 rounds (the floor) need 96 s, 95 s left: 16 goes, though 1 + 2 rounds (72 s) would fit."""
    plan = plan_timing((8, 16), seconds_per_token=1.0, remaining_s=95.0, rounds=6, warmup=1)
    assert (plan.sizes, plan.rounds) == ((8,), 6)


def test_nothing_is_planned_when_the_smallest_size_does_not_fit_the_fewest_rounds() -> None:
    plan = plan_timing((8, 16, 32), seconds_per_token=1.0, remaining_s=10.0, rounds=6, warmup=1)
    assert (plan.sizes, plan.dropped) == ((), (8, 16, 32))


def test_the_plan_line_names_the_pace_the_need_and_what_is_given_up() -> None:
    plan = plan_timing((8, 32), seconds_per_token=1.0, remaining_s=100.0, rounds=6, warmup=1)
    assert plan.describe() == (
        "timing plan: at this pace (1000.0 ms per new token per round of all arms) 8, 32 new tokens need ~280 s "
        "for 1 warm-up + 6 rounds per cell; 100 s of the budget left: dropping 32 new tokens"
    )


def test_a_capped_plan_line_labels_the_ci_the_capped_rounds_give() -> None:
    plan = plan_timing((8, 32), seconds_per_token=1.0, remaining_s=160.0, rounds=6, warmup=1)
    assert plan.describe().endswith("capping rounds at 3 (CI of the median: range 75%)")


def test_a_plan_that_fits_says_so() -> None:
    assert plan_timing((8,), seconds_per_token=0.01, remaining_s=300.0, rounds=6, warmup=1).describe().endswith("fits")
