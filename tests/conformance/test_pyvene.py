"""The pyvene adapter on tiny-gpt2, in its environment (`nox -s "conformance_cell(pyvene-0.1.8)"`): its generate
removes every hook on the model; with that turned off, what each way touches under the KV cache."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pyvene")

from conformance_helpers import run_cells  # noqa: E402

from equiv_core.conformance.adapter import load_adapter  # noqa: E402
from equiv_core.conformance.record import CellRecord, CellState  # noqa: E402

Cells = dict[tuple[str, str], CellRecord]


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> Cells:
    return run_cells("pyvene-0.1.8", "tiny-gpt2", Path(tmp_path_factory.mktemp("conformance")))


def test_the_adapter_says_something_about_every_intent() -> None:
    assert load_adapter("pyvene").missing() == ()


@pytest.mark.parametrize("intent", ["actadd-all", "caa-generated", "original-zero", "ablate-all"])
def test_generate_removes_hooks_it_did_not_register(cells: Cells, intent: str) -> None:
    cell = cells[intent, "idiomatic"]
    assert cell.state is CellState.SILENTLY_WRONG
    assert cell.reason.startswith("removed hooks it did not register")


@pytest.mark.parametrize("intent", ["actadd-all", "original-zero", "ablate-all"])
def test_with_others_hooks_kept_the_tutorial_forms_match_the_reference_bit_for_bit(cells: Cells, intent: str) -> None:
    cell = cells[intent, "hooks kept"]
    assert cell.state is CellState.SUPPORTED and cell.logits_bit_identical


def test_the_default_decode_intervention_skips_the_prefill_so_the_first_token_is_unsteered(cells: Cells) -> None:
    cell = cells["caa-generated", "hooks kept"]
    assert cell.state is CellState.SILENTLY_WRONG
    assert "started at step 1" in cell.reason
    assert cell.first_difference is not None and cell.first_difference.step == 0


def test_every_pass_with_an_intervention_on_the_last_position_is_caa(cells: Cells) -> None:
    assert cells["caa-generated", "workaround"].state is CellState.SUPPORTED
