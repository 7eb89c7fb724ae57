"""The runner: a finding that raises or cannot be expressed is a verdict with its cause, never a crashed run."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import nnsight

from equiv_core.arms.steering import NotExpressible
from equiv_core.config.run import RunConfig
from equiv_core.findings.runner import _BusyWatch, run_findings
from equiv_core.findings.study.registered import EXPERIMENTS
from equiv_core.support.machine_load import MachineLoad
from equiv_core.support.registry import Registry

Replace = Callable[[Registry[Any], str, Any], None]


def _replace_run(replace_entry: Replace, finding: str, run: Callable[..., Any]) -> None:
    replace_entry(EXPERIMENTS, finding, dataclasses.replace(EXPERIMENTS.get(finding), run=run))


def test_a_finding_that_raises_fails_with_its_cause(replace_entry: Replace) -> None:
    def broken(*_args: object) -> None:
        raise RuntimeError("tensor on fire")

    _replace_run(replace_entry, "steered_differs", broken)
    report = run_findings(RunConfig(model="tiny-gpt2", experiments=("iter0_equivalence", "steered_differs")))
    [other, failed] = report.findings
    assert other.verdict == "PASS"
    assert failed.verdict == "FAIL"
    assert failed.message.startswith("raised RuntimeError: tensor on fire (at ")
    assert not report.all_hold


def test_a_finding_the_version_cannot_express_is_not_expressible(replace_entry: Replace) -> None:
    def inexpressible(*_args: object) -> None:
        raise NotExpressible("this nnsight has no for-loop form of iter")

    _replace_run(replace_entry, "iter0_equivalence", inexpressible)
    [finding] = run_findings(RunConfig(model="tiny-gpt2", experiments=("iter0_equivalence",))).findings
    assert finding.verdict == "NOT EXPRESSIBLE"
    assert not finding.holds
    reason = "this nnsight has no for-loop form of iter"
    assert finding.message == f"not expressible on nnsight {nnsight.__version__}: {reason}"


class _ScriptedMonitor:
    """Stands in for LoadMonitor: each ``stop()`` returns the next scripted (seconds, others' share)."""

    def __init__(self, *readings: tuple[float, float]) -> None:
        self.readings = list(readings)

    def stop(self) -> MachineLoad:
        seconds, share = self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]
        return MachineLoad(2, 2, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), share, seconds)


def test_a_busy_machine_is_said_once_at_the_first_progress_line_three_seconds_in() -> None:
    said: list[str] = []
    watch = _BusyWatch(_ScriptedMonitor((1.0, 0.9), (3.5, 0.9), (6.0, 0.9)), said.append)  # type: ignore[arg-type]
    for line in ("loading", "loaded", "[1/5] ..."):
        watch.say(line)
    watch.finish()
    assert said[:2] == ["loading", "loaded"]  # 1.0 s in: too early to judge; 3.5 s in, after "loaded": busy
    assert said[2].startswith("warning: the machine is busy: other processes used 1.8 of its 2 cores")
    assert said[3:] == ["[1/5] ..."]  # said once, not again at the next line or at the end


def test_a_quiet_machine_gets_no_busy_warning() -> None:
    said: list[str] = []
    watch = _BusyWatch(_ScriptedMonitor((4.0, 0.05)), said.append)  # type: ignore[arg-type]
    watch.say("loading")
    assert watch.finish().busy is False
    assert said == ["loading"]


def test_a_batched_spec_run_says_each_arm_as_it_starts_and_each_finding_before_it_runs() -> None:
    """A long batch (every arm, then every arm per prompt alone) is never silent between findings (issue 18)."""
    from equiv_core.spec.recipes import RECIPES

    said: list[str] = []
    spec = RECIPES.get("original-zero").spec()
    config = RunConfig(model="tiny-gpt2", spec=spec, prompts=("The weather today is", "Once upon a time"))
    run_findings(config, progress=said.append)
    arms = [line for line in said if line.startswith("generating")]
    assert arms[:2] == ["generating (batch of 2) arm 1/6: plain ...", "generating (batch of 2) arm 2/6: iter ..."]
    assert "generating (prompt 2/2 alone) arm 5/5: hook_recompute ..." in arms
    assert said.index("[1/5] coverage ...") > said.index(arms[-1])
    assert "[5/5] batch_invariance ..." in said
