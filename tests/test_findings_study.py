"""The five findings on tiny models, and the checks that make a silently ineffective steering fail."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.steering import Edit, GenerationRecord
from equiv_core.findings.comparison import steering_problems
from equiv_core.findings.finding import ExperimentConfig
from equiv_core.findings.study.registered import EXPERIMENTS
from equiv_core.support.errors import UserInputError
from equiv_core.support.registry import Registry

EXPECTED_IDS = (
    "position_sweep",
    "kv_cache_persistence",
    "iter0_equivalence",
    "iter_all_out_of_bounds",
    "steered_differs",
)


def _config(context: SteeringContext, experiment_id: str) -> ExperimentConfig:
    last_layer = context.architecture.num_layers - 1
    return ExperimentConfig(layer=last_layer if EXPERIMENTS.get(experiment_id).uses_last_layer else 0)


def test_registry_holds_the_five_findings_in_order() -> None:
    assert EXPERIMENTS.names() == EXPECTED_IDS


def test_registry_refuses_duplicates_and_suggests_names() -> None:
    registry: Registry[int] = Registry("thing")
    registry.add("alpha", 1)
    with pytest.raises(ValueError, match="already registered"):
        registry.add("alpha", 2)
    with pytest.raises(UserInputError, match="did you mean 'alpha'"):
        registry.get("alpah")


@pytest.mark.parametrize("experiment_id", EXPECTED_IDS)
def test_finding_holds_on_tiny_models(tiny_context: SteeringContext, experiment_id: str) -> None:
    result = EXPERIMENTS.get(experiment_id).run(tiny_context, _config(tiny_context, experiment_id))
    assert result.holds, result.message
    assert result.id == experiment_id


def test_position_sweep_evidence(tiny_context: SteeringContext) -> None:
    result = EXPERIMENTS.get("position_sweep").run(tiny_context, _config(tiny_context, "position_sweep"))
    evidence = result.evidence.to_dict()
    assert evidence["changed_positions"] == [evidence["last_prompt_position"]] == [3]
    assert set(evidence["generated_ids_by_position"]) == {"0", "1", "2", "3"}
    assert all(len(ids) == 5 for ids in evidence["generated_ids_by_position"].values())


def test_iter_all_evidence_shapes(tiny_context: SteeringContext) -> None:
    result = EXPERIMENTS.get("iter_all_out_of_bounds").run(
        tiny_context, _config(tiny_context, "iter_all_out_of_bounds")
    )
    hidden = tiny_context.architecture.hidden_size
    evidence = result.evidence.to_dict()
    assert evidence["shapes_per_step"] == [[4, hidden]] + [[1, hidden]] * 4
    assert evidence["failed_steps"] == [1, 2, 3, 4]
    assert evidence["uncaught_error"].startswith("IndexError")


def test_iter_all_needs_two_new_tokens(tiny_context: SteeringContext) -> None:
    config = replace(_config(tiny_context, "iter_all_out_of_bounds"), max_new_tokens=1)
    result = EXPERIMENTS.get("iter_all_out_of_bounds").run(tiny_context, config)
    assert not result.holds
    assert "at least 2 new tokens" in result.message


@pytest.fixture
def ignoring_nnsight_edits(tiny_context: SteeringContext, monkeypatch: pytest.MonkeyPatch) -> SteeringContext:
    """nnsight arms that silently do nothing: they return unsteered generations and full passes."""

    def unsteered_generate(
        input_ids: torch.Tensor,
        max_new_tokens: int,
        edit: Edit,
        when: str,
        use_cache: bool = True,
        **_kwargs: Any,
    ) -> GenerationRecord:
        return tiny_context.unsteered(input_ids, max_new_tokens, use_cache=use_cache)

    monkeypatch.setattr(tiny_context.nnsight, "generate", unsteered_generate)
    monkeypatch.setattr(
        tiny_context.nnsight,
        "forward_logits",
        lambda input_ids, edit: tiny_context.reference_forward_logits(input_ids, None),
    )
    return tiny_context


@pytest.mark.parametrize(
    "experiment_id", ["kv_cache_persistence", "iter0_equivalence", "steered_differs", "position_sweep"]
)
def test_steering_that_did_nothing_fails(ignoring_nnsight_edits: SteeringContext, experiment_id: str) -> None:
    context = ignoring_nnsight_edits
    result = EXPERIMENTS.get(experiment_id).run(context, _config(context, experiment_id))
    assert not result.holds
    assert "steering not applied" in result.message
    assert "differ from the raw-hook reference" in result.message


def test_steering_at_the_wrong_position_fails(tiny_context: SteeringContext, monkeypatch: pytest.MonkeyPatch) -> None:
    """An nnsight arm that edits something other than what the reference edits disagrees with the raw hook."""
    original = tiny_context.nnsight.generate

    def wrong_position(
        input_ids: torch.Tensor, max_new_tokens: int, edit: Edit, when: str, **kwargs: Any
    ) -> GenerationRecord:
        return original(input_ids, max_new_tokens, Edit(edit.layer, 0), when, **kwargs)

    monkeypatch.setattr(tiny_context.nnsight, "generate", wrong_position)
    result = EXPERIMENTS.get("iter0_equivalence").run(tiny_context, _config(tiny_context, "iter0_equivalence"))
    assert not result.holds
    assert "differ from the raw-hook reference" in result.message


def _record(ids: tuple[int, ...], arm: str = "arm") -> GenerationRecord:
    return GenerationRecord(arm, (1, 2), ids, torch.zeros(len(ids), 4))


def test_an_invisible_edit_is_not_called_equivalent() -> None:
    problems = steering_problems(_record((5, 6)), _record((5, 6), "hook"), _record((5, 6), "unsteered"))
    assert problems and "cannot tell steering from no steering" in problems[0]


def test_agreeing_effective_steering_has_no_problems() -> None:
    assert steering_problems(_record((7, 8)), _record((7, 8), "hook"), _record((5, 6), "unsteered")) == []


def test_kv_persistence_is_not_applicable_when_the_edit_cannot_reach_later_steps(tiny_context: SteeringContext) -> None:
    """Zeroing the last layer's output at the last prompt token changes only that position's own logits: the
    cache of later steps is built from layer inputs, so persistence cannot be told from loss (power check)."""
    last = tiny_context.architecture.num_layers - 1
    result = EXPERIMENTS.get("kv_cache_persistence").run(tiny_context, ExperimentConfig(layer=last))
    assert result.verdict == "NOT APPLICABLE"
    assert "a persisted edit cannot be told from one lost after the prompt pass" in result.message
