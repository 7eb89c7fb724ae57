"""The runner: a finding that raises or cannot be expressed is a verdict with its cause, never a crashed run."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import nnsight

from equiv_core.compat import NotExpressible
from equiv_core.experiments import EXPERIMENTS
from equiv_core.registry import Registry
from equiv_core.run_config import RunConfig
from equiv_core.runner import run_findings

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
