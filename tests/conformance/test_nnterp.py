"""The nnterp adapter on tiny-gpt2, in its environment (`nox -s "conformance_cell(nnterp-1.3.0)"`, nnsight 0.7.0:
nnterp 1.3.0 does not import with nnsight 0.8): its ``steer`` and accessors inside nnsight's step loop."""

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
def test_steer_and_the_accessors_inside_the_step_loop_match_the_reference_bit_for_bit(
    cells: Cells, intent: str
) -> None:
    cell = cells[intent, "idiomatic"]
    assert cell.state is CellState.SUPPORTED and cell.logits_bit_identical


def test_an_accessor_edit_without_a_step_loop_is_the_prefill_only_edit_of_the_original_study(cells: Cells) -> None:
    assert cells["original-zero", "idiomatic"].state is CellState.SUPPORTED


def test_nnsight_07_leaves_its_generator_module_on_the_model_without_changing_later_outputs(cells: Cells) -> None:
    cell = cells["original-zero", "idiomatic"]
    assert any("generator" in item for item in cell.left_behind)
