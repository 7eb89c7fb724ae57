"""Slow tier: the five findings on gpt2-small-random, the exact compute of the original study's GPT-2 small."""

from __future__ import annotations

import pytest

from equiv_core.config.catalog import ModelShape, known_shape
from equiv_core.config.run import RunConfig
from equiv_core.findings.runner import run_findings

pytestmark = pytest.mark.slow


def test_all_five_findings_hold_on_gpt2_small_random() -> None:
    report = run_findings(RunConfig(model="gpt2-small-random", device="cpu"))
    assert {f.id: f.message for f in report.findings if not f.holds} == {}
    architecture = report.architecture
    shape = ModelShape(architecture.num_layers, architecture.hidden_size, architecture.max_positions)
    assert known_shape("gpt2-small-random") == shape
