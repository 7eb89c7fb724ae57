"""The TransformerLens 4.3.0 bridge adapter on tiny-llama, in its environment (`nox -s
"conformance_cell(transformer-lens-4.3.0)"`): with transformers 5.24 its cached generation ignores the prompt."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("transformer_lens")

from conformance_helpers import run_cells  # noqa: E402

from equiv_core.conformance.adapter import load_adapter  # noqa: E402
from equiv_core.conformance.record import CellRecord, CellState  # noqa: E402

Cells = dict[tuple[str, str], CellRecord]
# TransformerLens 4.3.0 calls the model with past_key_values, which transformers 5.24 deprecates (FutureWarning)
pytestmark = pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning")


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> Cells:
    return run_cells("transformer-lens-4.3.0", "tiny-llama", Path(tmp_path_factory.mktemp("conformance")))


def test_the_adapter_says_something_about_every_intent() -> None:
    assert load_adapter("transformer_lens_bridge").missing() == ()


@pytest.mark.parametrize("intent", ["actadd-all", "caa-generated", "ablate-all"])
def test_bridge_generate_with_an_empty_kv_cache_gives_other_ids_than_the_reference(cells: Cells, intent: str) -> None:
    cell = cells[intent, "idiomatic"]
    assert cell.state is CellState.SILENTLY_WRONG
    assert cell.first_difference is not None and cell.ids_equal is False


def test_an_absolute_position_raises_at_the_first_one_position_decode_pass(cells: Cells) -> None:
    cell = cells["original-zero", "idiomatic"]
    assert cell.state is CellState.ERROR and cell.reason.startswith("raised at step 1 (decode): IndexError")


@pytest.mark.parametrize("intent", ["actadd-all", "caa-generated", "original-zero", "ablate-all"])
def test_the_cache_under_its_old_name_and_the_model_put_back_match_the_reference(cells: Cells, intent: str) -> None:
    cell = cells[intent, "workaround"]
    assert cell.state is CellState.SUPPORTED and cell.logits_bit_identical and not cell.left_behind
