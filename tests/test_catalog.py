"""The torch-free catalogue of finding and arm ids agrees with the registries that hold their implementations."""

from __future__ import annotations

import pytest

from equiv_core.bench.arms import ARMS
from equiv_core.config.catalog import BENCH_ARMS, SPEC_FINDING_IDS, STUDY_FINDINGS
from equiv_core.findings.spec.registered import SPEC_FINDINGS
from equiv_core.findings.study.registered import EXPERIMENTS
from equiv_core.support.errors import UserInputError
from equiv_core.support.registry import Registry, check_name


def test_the_catalogue_lists_every_registered_finding_and_arm_in_report_order() -> None:
    assert EXPERIMENTS.names() == STUDY_FINDINGS
    assert SPEC_FINDINGS.names() == SPEC_FINDING_IDS
    assert ARMS.names() == BENCH_ARMS


def test_a_registry_refuses_an_id_its_catalogue_does_not_declare() -> None:
    registry: Registry[int] = Registry("arm", declared=("hook",))
    registry.add("hook", 1)
    with pytest.raises(ValueError, match="'plian' is not declared in equiv_core.config.catalog"):
        registry.add("plian", 2)


def test_an_unknown_name_is_answered_with_the_closest_and_every_valid_one() -> None:
    with pytest.raises(UserInputError, match=r"^unknown arm 'plian' \(did you mean 'plain'\?\); valid: plain, hook$"):
        check_name("arm", "plian", ("plain", "hook"))
