"""The lm-evaluation-harness ``steered`` adapter on tiny-gpt2, in its environment (`nox -s
"conformance_cell(lm-eval-0.4.13)"`): its steering file adds or clamps at every position of every pass."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("lm_eval")

from conformance_helpers import run_cells  # noqa: E402

from equiv_core.conformance.adapter import load_adapter  # noqa: E402
from equiv_core.conformance.record import CellRecord, CellState  # noqa: E402

Cells = dict[tuple[str, str], CellRecord]


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> Cells:
    return run_cells("lm-eval-0.4.13", "tiny-gpt2", Path(tmp_path_factory.mktemp("conformance")))


def test_the_adapter_says_something_about_every_intent() -> None:
    assert load_adapter("lm_eval_steered").missing() == ()


def test_the_add_action_steers_every_position_of_every_pass_bit_for_bit(cells: Cells) -> None:
    cell = cells["actadd-all", "idiomatic"]
    assert cell.state is CellState.SUPPORTED and cell.logits_bit_identical


def test_the_add_action_meant_for_caa_also_steers_the_earlier_prompt_positions(cells: Cells) -> None:
    cell = cells["caa-generated", "idiomatic"]
    assert cell.state is CellState.SILENTLY_WRONG
    assert "touched positions 0-2 at step 0" in cell.reason


def test_the_adapter_declares_a_prefill_only_edit_not_expressible_in_the_steering_file(cells: Cells) -> None:
    assert cells["original-zero", "idiomatic"].state is CellState.NOT_EXPRESSIBLE


def test_clamp_to_zero_is_directional_ablation_within_rounding(cells: Cells) -> None:
    cell = cells["ablate-all", "idiomatic"]
    assert cell.state is CellState.SUPPORTED and cell.ids_equal


@pytest.mark.parametrize("intent", ["caa-generated", "original-zero"])
def test_its_steer_context_manager_with_a_callable_of_ones_own_expresses_the_rest(cells: Cells, intent: str) -> None:
    assert cells[intent, "workaround"].state is CellState.SUPPORTED
