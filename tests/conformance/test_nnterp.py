"""The nnterp adapter on tiny-gpt2, in its environment (`nox -s "conformance_cell(nnterp-1.3.0)"`, nnsight 0.7.0:
nnterp 1.3.0 does not import with nnsight 0.8): its ``steer`` and accessors in a generate trace without a step loop,
as its docs and ``patchscope_generate`` write them, edit the prefill only."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("nnterp")

from conformance_helpers import run_cells  # noqa: E402

from equiv_core.conformance.adapter import load_adapter  # noqa: E402
from equiv_core.conformance.record import CellRecord, CellState  # noqa: E402

Cells = dict[tuple[str, str], CellRecord]


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> Cells:
    return run_cells("nnterp-1.3.0", "tiny-gpt2", Path(tmp_path_factory.mktemp("conformance")))


def test_the_adapter_says_something_about_every_intent() -> None:
    assert load_adapter("nnterp").missing() == ()


@pytest.mark.parametrize("intent", ["actadd-all", "caa-generated", "ablate-all"])
def test_steering_in_a_generate_trace_without_a_step_loop_edits_the_prefill_only(cells: Cells, intent: str) -> None:
    cell = cells[intent, "idiomatic"]
    assert cell.state is CellState.SILENTLY_WRONG
    assert "touched step 0 only" in cell.reason


def test_the_prefill_only_edit_of_the_original_study_is_what_it_means(cells: Cells) -> None:
    assert cells["original-zero", "idiomatic"].state is CellState.SUPPORTED


@pytest.mark.parametrize("intent", ["actadd-all", "caa-generated", "ablate-all"])
def test_the_same_edit_inside_nnsights_step_loop_matches_the_reference(cells: Cells, intent: str) -> None:
    cell = cells[intent, "workaround"]
    assert cell.state is CellState.SUPPORTED and cell.logits_bit_identical


def test_nnsight_07_leaves_its_generator_module_on_the_model_without_changing_later_outputs(cells: Cells) -> None:
    cell = cells["original-zero", "idiomatic"]
    assert any("generator" in item for item in cell.left_behind)
