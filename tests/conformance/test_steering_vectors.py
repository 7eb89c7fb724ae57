"""The steering-vectors adapter on tiny-gpt2, in its environment (`nox -s "conformance_cell(steering-vectors-0.12.2)"`,
transformers < 5): what each of its ways does under the KV cache."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("steering_vectors")

from conformance_helpers import run_cells  # noqa: E402

from equiv_core.conformance.adapter import load_adapter  # noqa: E402
from equiv_core.conformance.record import CellRecord, CellState  # noqa: E402

Cells = dict[tuple[str, str], CellRecord]


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> Cells:
    return run_cells("steering-vectors-0.12.2", "tiny-gpt2", Path(tmp_path_factory.mktemp("conformance")))


def test_the_adapter_says_something_about_every_intent() -> None:
    assert load_adapter("steering_vectors").missing() == ()


def test_apply_with_a_multiplier_steers_every_position_of_every_pass(cells: Cells) -> None:
    assert cells["actadd-all", "idiomatic"].state is CellState.SUPPORTED


def test_min_token_index_steers_the_prefill_only_under_the_kv_cache(cells: Cells) -> None:
    cell = cells["caa-generated", "idiomatic"]
    assert cell.state is CellState.SILENTLY_WRONG
    assert "touched step 0 only" in cell.reason


def test_token_indices_minus_one_steers_the_last_position_of_each_pass(cells: Cells) -> None:
    assert cells["caa-generated", "workaround"].state is CellState.SUPPORTED


def test_an_absolute_token_index_raises_index_error_at_the_first_decode_pass(cells: Cells) -> None:
    cell = cells["original-zero", "idiomatic"]
    assert cell.state is CellState.ERROR
    assert cell.reason.startswith("raised at step 1 (decode): IndexError")


def test_a_slice_token_index_is_empty_at_decode_passes_so_edits_the_prefill_only(cells: Cells) -> None:
    assert cells["original-zero", "workaround"].state is CellState.SUPPORTED


def test_the_ablation_operator_matches_the_reference_bit_for_bit(cells: Cells) -> None:
    cell = cells["ablate-all", "idiomatic"]
    assert cell.state is CellState.SUPPORTED and cell.logits_bit_identical
