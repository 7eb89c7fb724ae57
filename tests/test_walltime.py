"""The time breakdown of `equiv run`: phases that add up, and the harness share."""

from __future__ import annotations

import time

import pytest

from equiv_core.support.walltime import CommandStart, RunTimings, TimeBreakdown, breakdown


def test_the_phases_add_up_to_the_total() -> None:
    now = time.time()
    start = CommandStart(process_epoch=now - 10.0, command_epoch=now - 9.5)
    timings = RunTimings(load_s=0.4, prepare_s=1.0, findings_s=5.5, model_work_s=5.0, model_calls=20, shared_calls=6)
    spent = breakdown(start, imports_done_epoch=now - 8.0, timings=timings, mlflow_s=1.0)
    assert spent.startup_s == pytest.approx(0.5) and spent.imports_s == pytest.approx(1.5)
    assert spent.checks_s == pytest.approx(0.5)
    parts = (spent.startup_s, spent.imports_s, spent.prepare_s, spent.model_work_s, spent.checks_s, spent.mlflow_s)
    assert spent.other_s == pytest.approx(0.5, abs=0.05)
    assert sum(parts) + spent.other_s == pytest.approx(spent.total_s)


def test_harness_share_is_everything_but_model_work() -> None:
    spent = TimeBreakdown(0.2, 3.0, 0.5, 0.4, 6.0, 20, 6, 0.3, 0.0, 0.0, 10.0)
    assert spent.harness_share == pytest.approx(0.4)
    assert spent.render().endswith("harness (all but model work) 40%")
