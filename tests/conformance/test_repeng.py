"""The repeng adapter on tiny-gpt2, in its environment (`nox -s "conformance_cell(repeng-0.4.0)"`, numpy < 2):
``ControlModel.set_control`` adds at every position of every pass; other intents need its ``operator``."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("repeng")

from conformance_helpers import run_cells  # noqa: E402

from equiv_core.conformance.adapter import load_adapter  # noqa: E402
from equiv_core.conformance.record import CellRecord, CellState  # noqa: E402

Cells = dict[tuple[str, str], CellRecord]


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> Cells:
    return run_cells("repeng-0.4.0", "tiny-gpt2", Path(tmp_path_factory.mktemp("conformance")))


def test_the_adapter_says_something_about_every_intent() -> None:
    assert load_adapter("repeng").missing() == ()


def test_set_control_adds_at_every_position_of_every_pass_bit_for_bit(cells: Cells) -> None:
    cell = cells["actadd-all", "idiomatic"]
    assert cell.state is CellState.SUPPORTED and cell.logits_bit_identical


def test_set_control_meant_for_caa_also_steers_the_earlier_prompt_positions(cells: Cells) -> None:
    cell = cells["caa-generated", "idiomatic"]
    assert cell.state is CellState.SILENTLY_WRONG
    assert "touched positions 0-2 at step 0" in cell.reason


@pytest.mark.parametrize("intent", ["original-zero", "ablate-all"])
def test_the_adapter_declares_zeroing_and_ablation_not_expressible_with_set_control_alone(
    cells: Cells, intent: str
) -> None:
    cell = cells[intent, "idiomatic"]
    assert cell.state is CellState.NOT_EXPRESSIBLE and "set_control" in cell.reason


@pytest.mark.parametrize("intent", ["caa-generated", "original-zero", "ablate-all"])
def test_its_operator_expresses_the_other_intents(cells: Cells, intent: str) -> None:
    assert cells[intent, "workaround"].state is CellState.SUPPORTED
