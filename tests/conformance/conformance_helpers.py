"""Running one library environment's cells on a tiny model, for the adapters' unit tests (each test module runs in
its library's environment, `nox -s "conformance_cell(...)"`, and is skipped where the library is not installed)."""

from __future__ import annotations

from pathlib import Path

from equiv_core.conformance.adapter import load_adapter
from equiv_core.conformance.cell import run_environment
from equiv_core.conformance.matrix import environment
from equiv_core.conformance.record import CellRecord
from equiv_core.tracking.store import NullTracker


def run_cells(environment_id: str, model: str, out: Path) -> dict[tuple[str, str], CellRecord]:
    """Every cell of ``environment_id`` on ``model``, by (intent, variant)."""
    chosen = environment(environment_id)
    adapter = load_adapter(chosen.module)
    record = run_environment(chosen, adapter, (model,), out, NullTracker(), lambda _line: None)
    return {(cell.intent, cell.variant): cell for cell in record.cells}
