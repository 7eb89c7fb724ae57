"""``conformance-status.json``: every cell of every environment in one file, for machines to read (CI gates,
dashboards, a library's release check), and read back typed here.

Schema (format 2)::

    {
      "format": 2,
      "generated_at": "2026-12-07T14:00:00+00:00",       # UTC, when the table was made
      "models": ["tiny-gpt2", ...],                      # the models of the cells
      "intents": ["actadd-all", ...],                    # equiv_core.conformance.intents.Intent
      "states": {"SUPPORTED": 40, ...},                  # cells per CellState
      "environments": [                                  # one per library environment: its record, less its cells
        {"environment": "pyvene-0.1.8", "library": "pyvene", "version": "0.1.8",
         "status": "ran" | "unsupported" | "error", "reason": "...", "requirements": ["pyvene==0.1.8"],
         "versions": {"pyvene": "0.1.8", "torch": "2.13.0+cpu", ...}, "models": ["tiny-gpt2", ...],
         "finished_at": "...", "seconds": 41.2, "mlflow_run_id": "..." | null, "format": 1}
      ],
      "cells": [                                         # one per (library, version, intent, variant, model)
        {"library", "version", "intent", "variant", "model", "state", "reason", "follows", "form", "note",
         "attn_implementation", "touched_as_intended", "ids_equal", "logits_bit_identical",
         "logits_max_abs_diff", "noise_floor", "first_difference": null | {"step", "library_id", "reference_id",
         "library_text", "reference_text"}, "library_ids", "reference_ids", "grid", "findings": {finding: verdict},
         "weights_sha256" (the weights as loaded, before the library ran), "left_behind" (the first 10 hooks or
         modules left on the model, changing no later output), "left_behind_total", "seconds"}
      ]
    }

``state`` is one of SUPPORTED, SUPPORTED_DEGRADED, SILENTLY_WRONG, ERROR, NOT_EXPRESSIBLE, NO_REFERENCE
(:class:`~equiv_core.conformance.record.CellState`). Standard library only.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from equiv_core.conformance.record import CellRecord, CellState, EnvironmentRecord
from equiv_core.support.outputs import write_json

STATUS_FORMAT = 2  # 1 listed each environment's summary only (no requirements, models, MLflow run)


@dataclass(frozen=True, slots=True)
class ConformanceStatus:
    """The whole matrix: environments and cells (see the module docstring for the file's schema)."""

    generated_at: str
    models: tuple[str, ...]
    intents: tuple[str, ...]
    environments: tuple[EnvironmentRecord, ...]  # their cells are in ``cells``
    cells: tuple[CellRecord, ...]

    def states(self) -> dict[str, int]:
        counts = Counter(cell.state for cell in self.cells)
        return {str(state): counts.get(state, 0) for state in CellState}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": STATUS_FORMAT,
            "generated_at": self.generated_at,
            "models": list(self.models),
            "intents": list(self.intents),
            "states": self.states(),
            "environments": [
                {key: value for key, value in environment.to_dict().items() if key != "cells"}
                for environment in self.environments
            ],
            "cells": [asdict(cell) for cell in self.cells],
        }


def build_status(records: list[EnvironmentRecord], intents: tuple[str, ...]) -> ConformanceStatus:
    """The status of ``records`` (one per environment), cells in environment then model then intent order."""
    models: list[str] = []
    for record in records:
        models += [model for model in record.models if model not in models]
    return ConformanceStatus(
        generated_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        models=tuple(models),
        intents=intents,
        environments=tuple(replace(record, cells=()) for record in records),
        cells=tuple(cell for record in records for cell in record.cells),
    )


def write_status(status: ConformanceStatus, path: Path) -> Path:
    write_json(path, status.to_dict())
    return path


def read_status(path: Path) -> ConformanceStatus:
    """Read a status file back (ValueError naming the file for one of another format)."""
    try:
        data = json.loads(path.read_text())
        if data.get("format") != STATUS_FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {STATUS_FORMAT}")
        return ConformanceStatus(
            generated_at=data["generated_at"],
            models=tuple(data["models"]),
            intents=tuple(data["intents"]),
            environments=tuple(EnvironmentRecord.from_dict(environment) for environment in data["environments"]),
            cells=tuple(CellRecord.from_dict(cell) for cell in data["cells"]),
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: not a conformance status file ({error})") from None
