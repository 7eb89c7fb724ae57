"""The nnsight adapter (``for step in tracer.iter[:N]``) on tiny-gpt2: every intent as the reference does it, bit
for bit. Runs in the default environment (nnsight 0.8.1) and in the 0.6.3 / 0.7.0 conformance environments."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("nnsight")

from conformance_helpers import run_cells  # noqa: E402

from equiv_core.conformance.record import CellRecord, CellState  # noqa: E402


@pytest.fixture(scope="module")
def cells(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], CellRecord]:
    from nnsight import __version__

    return run_cells(f"nnsight-{__version__}", "tiny-gpt2", Path(tmp_path_factory.mktemp("conformance")))


def test_the_adapter_says_something_about_every_intent() -> None:
    from equiv_core.conformance.adapter import load_adapter

    assert load_adapter("nnsight").missing() == ()


@pytest.mark.parametrize("intent", ["actadd-all", "caa-generated", "original-zero", "ablate-all"])
def test_iter_loop_is_supported_bit_for_bit(cells: dict[tuple[str, str], CellRecord], intent: str) -> None:
    cell = cells[intent, "idiomatic"]
    assert cell.state is CellState.SUPPORTED, cell.reason
    assert cell.logits_bit_identical, cell.reason
