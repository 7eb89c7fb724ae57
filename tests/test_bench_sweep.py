"""The bench sweep's own logic on scripted timings: prefill/decode split, adaptive rounds, the budget, and the
pytest-benchmark document. No model runs here: ``measure`` and the clock are replaced by scripts."""

from __future__ import annotations

import functools
import itertools
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from bench_helpers import QUIET, bench_report

from equiv_core.arms.steering import GenerationRecord
from equiv_core.bench import results as bench_results
from equiv_core.bench import timing as bench_timing
from equiv_core.bench.arms import Arm
from equiv_core.bench.pytest_benchmark_json import pytest_benchmark_document
from equiv_core.bench.results import ArmResult, BenchReport
from equiv_core.bench.statistics import summarize
from equiv_core.bench.timer import Measurement
from equiv_core.config.bench import BenchConfig
from equiv_core.support.machine_load import MachineLoad
from equiv_core.support.progress import Progress
from equiv_core.support.registry import Registry


def _cell(arm: str, new_tokens: int, median_s: float, rounds: tuple[float, ...] = ()) -> ArmResult:
    walls = rounds or (median_s,) * 5
    measurements = tuple(Measurement(wall, wall, 1024) for wall in walls)
    return ArmResult(
        arm, new_tokens, summarize(list(walls)), measurements, 0.02, (1,) * new_tokens, "0" * 64, None, None, None, 0
    )


def _report(config: BenchConfig, results: tuple[ArmResult, ...]) -> BenchReport:
    return bench_report(config, results)


def test_prefill_and_decode_split_from_one_token_and_longest_runs() -> None:
    """1-token run = prefill; (longest - prefill) / (longest - 1) = seconds per decoded token."""
    config = BenchConfig(model="tiny-gpt2", arms=("hook", "recompute"), new_tokens=(8, 32))
    results = (
        _cell("hook", 1, 0.050),
        _cell("hook", 8, 0.330),
        _cell("hook", 32, 1.290),
        _cell("recompute", 1, 0.050),
        _cell("recompute", 32, 2.530),
    )
    split = _report(config, results).prefill_split()
    assert split["hook"]["prefill_s"] == 0.050
    assert split["hook"]["decode_per_token_s"] == pytest.approx(0.040)
    assert split["recompute"]["decode_per_token_s"] == pytest.approx(0.080)
    assert split["hook"]["at_new_tokens"] == 32


def test_no_split_without_a_one_token_run() -> None:
    config = BenchConfig(model="tiny-gpt2", arms=("hook",), new_tokens=(8, 32))
    assert _report(config, (_cell("hook", 8, 0.3), _cell("hook", 32, 1.2))).prefill_split() == {}


@dataclass
class _Script:
    """A fake clock, and arms whose every call takes the next of their scripted wall times on it."""

    walls: dict[str, Iterator[float]]
    now: float = 0.0

    def monotonic(self) -> float:
        return self.now

    def arms(self) -> Registry[Arm]:
        registry: Registry[Arm] = Registry("arm")
        for name in self.walls:
            registry.add(name, Arm(name, True, "scripted", functools.partial(self._run, name)))
        return registry

    def _run(self, arm: str, *_args: Any) -> GenerationRecord:
        self.now += next(self.walls[arm])
        return _RECORD

    def measure(self, function: Any, _device: torch.device, _method: str) -> tuple[GenerationRecord, Measurement]:
        started = self.now
        record = function()
        return record, Measurement(self.now - started, self.now - started, 0)


_RECORD = GenerationRecord("scripted", (0,), (1, 2), torch.zeros(2, 3))


class _Context:
    device = torch.device("cpu")


def _lines(script: _Script, said: list[str]) -> Progress:
    """Progress in line mode on the script's clock, its lines collected in ``said``."""
    return Progress(said.append, bar=False, clock=script.monotonic)


def _time(
    script: _Script,
    config: BenchConfig,
    budget_s: float,
    window: bench_timing.Window | None = None,
    said: list[str] | None = None,
) -> bench_timing.SizeTiming:
    """Time size 2 on the script; ``window`` defaults to at least ``config.rounds`` rounds within ``budget_s``."""
    expected = {(arm, 2): _RECORD for arm in config.arms}
    context = _Context()
    window = window or bench_timing.Window(config.rounds, budget_s, budget_s)
    progress = _lines(script, [] if said is None else said)
    runner = bench_timing.Runner(script.arms(), script.measure, script.monotonic)
    return bench_timing.time_size(
        context, torch.zeros(1, 3), config, 2, expected, window, "rss-delta", progress, runner
    )  # type: ignore[arg-type]


def _alternating(low: float, high: float) -> Iterator[float]:
    return itertools.cycle([low, high])


def test_a_steady_arm_stops_at_the_minimum_and_a_noisy_one_runs_to_max_rounds() -> None:
    config = BenchConfig(arms=("hook", "recompute"), rounds=6, max_rounds=20, warmup=1)
    script = _Script({"hook": itertools.repeat(0.1), "recompute": _alternating(0.1, 0.2)})
    timing = _time(script, config, budget_s=1e6)
    assert len(timing.measurements["hook"]) == 6
    assert len(timing.measurements["recompute"]) == 20


def test_a_noisy_arm_that_settles_stops_once_its_ci_meets_the_target() -> None:
    settling = itertools.chain([0.1, 0.2, 0.1, 0.2, 0.1, 0.2], itertools.repeat(0.15))
    config = BenchConfig(arms=("hook",), rounds=6, max_rounds=200, warmup=0)
    timing = _time(_Script({"hook": settling}), config, budget_s=1e6)
    rounds = len(timing.measurements["hook"])
    assert 6 < rounds < 200
    assert summarize([m.wall_s for m in timing.measurements["hook"]]).meets(0.02)


def test_the_budget_stops_rounds_before_the_next_would_overrun() -> None:
    """Rounds of 1 s (two arms x 0.5 s) never converge; a 10.5 s budget allows the 1 s warm-up and 9 rounds."""
    config = BenchConfig(arms=("hook", "recompute"), rounds=6, max_rounds=200, warmup=1)
    script = _Script({"hook": _alternating(0.4, 0.6), "recompute": _alternating(0.6, 0.4)})
    timing = _time(script, config, budget_s=10.5)
    assert len(timing.measurements["hook"]) == 9
    assert script.now <= 10.5


def test_no_round_starts_that_would_end_past_the_budget_even_below_the_minimum() -> None:
    """Rounds of 1 s, 6 wanted after the warm-up, 3.5 s of budget: the warm-up and 2 rounds, ending at 3 s."""
    config = BenchConfig(arms=("hook", "recompute"), rounds=6, max_rounds=200, warmup=1)
    script = _Script({"hook": _alternating(0.4, 0.6), "recompute": _alternating(0.6, 0.4)})
    timing = _time(script, config, budget_s=3.5)
    assert (timing.timed_rounds, script.now) == (2, 3.0)


def test_a_size_cut_below_its_minimum_by_the_budget_is_marked_so() -> None:
    config = BenchConfig(arms=("hook",), rounds=6, max_rounds=200, warmup=1)
    timing = _time(_Script({"hook": itertools.repeat(1.0)}), config, budget_s=3.5)
    assert timing.stopped_by_budget


def test_the_first_round_of_a_size_is_not_started_when_its_estimate_would_overrun() -> None:
    config = BenchConfig(arms=("hook",), rounds=6, max_rounds=200, warmup=1)
    script = _Script({"hook": itertools.repeat(1.0)})
    window = bench_timing.Window(min_rounds=6, extra_until=10.0, budget_end=10.0, first_round_s=12.0)
    timing = _time(script, config, budget_s=10.0, window=window)
    assert (timing.timed_rounds, script.now) == (0, 0.0)


def test_rounds_beyond_the_minimum_stop_at_the_sizes_share_not_the_whole_budget() -> None:
    """A never-settling arm with 6 rounds' minimum, a share ending at 8.5 s of a 100 s budget: 1 warm-up + 7."""
    config = BenchConfig(arms=("hook",), rounds=6, max_rounds=200, warmup=1)
    script = _Script({"hook": _alternating(0.5, 1.5)})
    window = bench_timing.Window(min_rounds=6, extra_until=8.5, budget_end=100.0)
    timing = _time(script, config, budget_s=100.0, window=window)
    assert timing.timed_rounds == 7


def test_in_line_mode_a_long_size_says_where_it_stands_every_ten_seconds() -> None:
    """Rounds of 4 s, 10 of them: lines after rounds ending at 12, 24 and 36 s (each 10 s after the last line)."""
    config = BenchConfig(arms=("hook",), rounds=10, max_rounds=10, warmup=0)
    said: list[str] = []
    _time(_Script({"hook": itertools.repeat(4.0)}), config, budget_s=1e6, said=said)
    assert [line.split(",")[0] for line in said] == [f"timing 2 new tokens: round {n}" for n in (3, 6, 9)]


def _planner(script: _Script, sizes: tuple[int, ...], budget_s: float, said: list[str]) -> bench_timing.Planner:
    config = BenchConfig(arms=("hook", "plain"), rounds=6, warmup=1, budget_s=budget_s)
    return bench_timing.Planner(config, sizes, budget_s, _lines(script, said), script.monotonic)


def _timed(size: int, round_s: float, rounds: int) -> bench_timing.SizeTiming:
    """``rounds`` timed rounds at ``size``, each arm taking half of ``round_s``."""
    walls = [Measurement(round_s / 2, 0.0, 0)] * rounds
    return bench_timing.SizeTiming({"hook": list(walls), "plain": list(walls)}, {"hook": 0, "plain": 0})


def test_the_first_size_runs_before_any_plan() -> None:
    script, said = _Script({}), list[str]()
    window = _planner(script, (1, 8, 32), 300.0, said).window(1)
    assert window is not None and window.first_round_s == 0.0 and said == []


def test_after_the_first_size_a_plan_line_says_what_the_rest_needs_before_it_runs() -> None:
    """1 s per round at 1 token; 8 and 32 at 7 rounds need 7 * (8 + 32) = 280 s, more than the 290 s - 20 s left."""
    script, said = _Script({}), list[str]()
    planner = _planner(script, (1, 8, 32), 290.0, said)
    planner.window(1)
    planner.record(1, _timed(1, 1.0, 6), bench_timing.Window(6, 0.0, 290.0))
    script.now = 20.0
    planner.window(8)
    assert said == [planner.plans[0].describe()]
    assert "8, 32 new tokens need ~280 s" in said[0] and "270 s of the budget left: capping rounds at 5" in said[0]


def test_a_size_the_plan_drops_gets_no_window_and_a_reason() -> None:
    """At 1 s per new token per round, 8 and 32 tokens at 1 warm-up + 3 rounds need 160 s; 100 s are left."""
    script, said = _Script({}), list[str]()
    planner = _planner(script, (1, 8, 32), 101.0, said)
    planner.window(1)
    planner.record(1, _timed(1, 1.0, 6), bench_timing.Window(6, 0.0, 101.0))
    script.now = 1.0
    assert planner.window(8) is not None
    assert planner.window(32) is None and 32 in planner.not_timed


def test_a_size_an_early_plan_drops_is_planned_again_at_its_turn_from_the_pace_measured_by_then() -> None:
    """The 1-token pace (1 s per token: the whole prefill) drops 32; 8 tokens then run at 0.2 s per token, and 32
    fits after all: 4 x 32 x 0.2 = 25.6 s of the 62 s left."""
    script, said = _Script({}), list[str]()
    planner = _planner(script, (1, 8, 32), 101.0, said)
    planner.window(1)
    planner.record(1, _timed(1, 1.0, 6), bench_timing.Window(6, 0.0, 101.0))
    script.now = 1.0
    assert planner.window(8) is not None and "dropping 32 new tokens" in said[-1] and 32 not in planner.not_timed
    planner.record(8, _timed(8, 1.6, 6), bench_timing.Window(6, 0.0, 101.0))
    script.now = 40.0
    window = planner.window(32)
    assert window is not None and 32 not in planner.not_timed and said[-1].endswith("fits")


def test_a_size_slower_than_its_plan_stops_at_three_rounds_to_leave_the_larger_sizes_theirs() -> None:
    """Planned at 1 s per round, the size takes 10 s per round (the machine got busier): from 3 rounds on, no round
    ends past ``reserve_from`` (35 s here), where the budget the next size's fewest rounds need begins."""
    config = BenchConfig(arms=("hook",), rounds=6, max_rounds=200, warmup=0)
    script = _Script({"hook": itertools.repeat(10.0)})
    window = bench_timing.Window(min_rounds=6, extra_until=60.0, budget_end=200.0, first_round_s=1.0, reserve_from=35.0)
    timing = _time(script, config, budget_s=200.0, window=window)
    assert (timing.timed_rounds, script.now, timing.stopped_by_budget) == (3, 30.0, True)


def test_budget_shares_grow_with_the_tokens_generated() -> None:
    shares = bench_timing.budget_shares((1, 8, 32))
    assert shares == pytest.approx({1: 2 / 44, 8: 9 / 44, 32: 33 / 44})


def test_the_pytest_benchmark_document_carries_every_round_and_is_read_by_pytest_benchmark_compare(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pytest_benchmark import cli

    config = BenchConfig(model="tiny-gpt2", arms=("hook", "plain"), new_tokens=(8,), rounds=3)
    results = (_cell("hook", 8, 0.3, (0.3, 0.31, 0.29)), _cell("plain", 8, 0.33, (0.33, 0.34, 0.32)))
    document = pytest_benchmark_document(_report(config, results))
    [hook, plain] = document["benchmarks"]
    assert hook["name"] == "test_arm_cost[8-hook]" and plain["fullname"].endswith("test_arm_cost[8-plain]")
    assert hook["stats"]["data"] == [0.3, 0.31, 0.29] and hook["stats"]["median"] == 0.3
    assert hook["stats"]["rounds"] == 3 and hook["stats"]["iterations"] == 1

    path = tmp_path / "0001_sweep.json"
    path.write_text(json.dumps(document))
    monkeypatch.setattr(sys, "argv", ["pytest-benchmark", "compare", str(path), "--columns", "median,rounds"])
    cli.main()
    printed = capsys.readouterr().out
    assert "test_arm_cost[8-hook]" in printed and "test_arm_cost[8-plain]" in printed
    assert "Failed to load" not in printed


def test_a_busy_machine_gets_one_warning_line_and_a_quiet_one_none() -> None:
    busy = MachineLoad(2, 2, loadavg_start=(2.5, 2, 2), loadavg_end=(3.1, 2, 2), others_share=0.45, seconds=60)
    warning = busy.warning()
    assert warning is not None and "\n" not in warning
    assert "other processes used 0.9 of its 2 cores beside 2 timed threads" in warning
    assert warning.endswith("rerun on a quiet machine")
    assert QUIET.warning() is None


def test_other_processes_on_cores_the_timed_threads_leave_free_are_not_busy() -> None:
    """Two cores' worth of other work on a 16-core machine timing 4 threads competes with nothing."""
    load = MachineLoad(16, 4, loadavg_start=(2, 2, 2), loadavg_end=(2, 2, 2), others_share=2 / 16, seconds=60)
    assert not load.busy
    assert MachineLoad(16, 16, (2, 2, 2), (2, 2, 2), others_share=2 / 16, seconds=60).busy


def test_a_slow_spell_of_the_machine_cancels_in_the_paired_ratio() -> None:
    """Rounds 3-4 run 30% slower for every arm: each arm's own CI widens, the per-round ratio stays at 1.10."""
    spell = [1.0, 1.0, 1.3, 1.3, 1.0, 1.0, 1.0, 1.0, 1.3, 1.0]
    hook = [Measurement(factor * 1.0, 0.0, 0) for factor in spell]
    plain = [Measurement(factor * 1.1, 0.0, 0) for factor in spell]
    paired = bench_results.paired_ratios({"hook": hook, "plain": plain}, "plain", "hook")
    assert paired is not None and paired.n == 10
    assert paired.median == pytest.approx(1.1) and paired.ci_half_width < 1e-9
    assert summarize([m.wall_s for m in plain]).ci_half_width > 0.2


def test_paired_ratios_use_only_the_rounds_both_arms_ran() -> None:
    hook = [Measurement(1.0, 0.0, 0)] * 6
    plain = [Measurement(2.0, 0.0, 0)] * 9  # kept getting rounds after the hook met its target
    paired = bench_results.paired_ratios({"hook": hook, "plain": plain}, "plain", "hook")
    assert paired is not None and (paired.n, paired.median) == (6, 2.0)
    assert bench_results.paired_ratios({"hook": hook}, "hook", "hook") is None
