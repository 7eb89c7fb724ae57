"""The pytest plugin: a fixture that keeps a research codebase's steering honest in its own test suite.

    def test_my_steering_adds_at_every_token(steering_check):
        steering_check(my_steer, intent="actadd-all", model="tiny-llama")

``steering_check`` runs :func:`equiv_core.jobs.check.check_steering` and fails the test with the report (the
verdicts, the messages and the step x position grid of what the code touched) when a finding fails; it returns the
:class:`~equiv_core.jobs.check.CheckResult` otherwise. Registered through the ``pytest11`` entry point of
equiv-bench; nothing heavy (torch, transformers) is imported until the fixture is used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from equiv_core.jobs.check import CheckResult


def _check(steer: Callable[..., Any], intent: Any, **options: Any) -> CheckResult:
    from equiv_core.jobs.check import check_steering

    result = check_steering(steer, intent, **options)
    if not result.holds:
        pytest.fail(f"equiv check: the steering does not do what it is meant to\n\n{result}", pytrace=False)
    return result


@pytest.fixture
def steering_check() -> Callable[..., CheckResult]:
    """``steering_check(steer, intent, model=..., prompts=..., max_new_tokens=..., form=...)``: check ``steer``
    against ``intent`` (see :func:`equiv_core.jobs.check.check_steering`); the test fails with the report if any
    finding fails."""
    return _check
