"""The bench report's derived numbers: prefill / per-token decode split and ratios, on known timings."""

from __future__ import annotations

import pytest

from equiv_core.bench.statistics import TimingStats
from equiv_core.bench.sweep import ArmResult, BenchConfig, BenchReport


def _cell(arm: str, new_tokens: int, median_s: float) -> ArmResult:
    stats = TimingStats(5, median_s, 0.0, median_s, median_s, median_s)
    return ArmResult(arm, new_tokens, stats, (1,) * new_tokens, "0" * 64, None, None, None, 0)


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
    report = BenchReport(config, results, {}, {}, {}, prompt_length=4)
    split = report.prefill_split()
    assert split["hook"]["prefill_s"] == 0.050
    assert split["hook"]["decode_per_token_s"] == pytest.approx(0.040)
    assert split["recompute"]["decode_per_token_s"] == pytest.approx(0.080)
    assert split["hook"]["at_new_tokens"] == 32


def test_no_split_without_a_one_token_run() -> None:
    config = BenchConfig(model="tiny-gpt2", arms=("hook",), new_tokens=(8, 32))
    report = BenchReport(config, (_cell("hook", 8, 0.3), _cell("hook", 32, 1.2)), {}, {}, {}, prompt_length=4)
    assert report.prefill_split() == {}
