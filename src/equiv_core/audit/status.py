"""``results/audit/status.json``: the audit as a table other tools can read.

Schema ``equiv-bench/audit-status``, version 1 (a JSON object)::

    schema            "equiv-bench/audit-status"
    schema_version    1
    generated_at      ISO 8601 time, UTC
    reference_cell    the cell whose token ids the others are compared with, e.g. "nnsight='0.8.1'"
    records           one object per (source, cell, model) that ran, so per (nnsight, transformers, torch, model)
                      within a source, plus one per cell that could not run (model null):
        cell          the cell id, e.g. "transformers='5.2.0'" (release searches: "nnsight='0.6.1'")
        source        "matrix" (the default audit) or "<mode>-<package>" (a release search, e.g. "bisect-nnsight")
        status        "ran" | "unsupported" (could not install or import; see reason) | "error" (crashed)
        reason        why it did not run, else null
        nnsight, transformers, torch, python   the versions installed (null when they could not be)
        model         e.g. "tiny-gpt2", or null for a cell that did not run
        observables   {name: value}: "finding.<id>" -> PASS / FAIL / NOT EXPRESSIBLE / NOT APPLICABLE;
                      "block_output_form" -> "tensor" | "tuple"; "literal_output0_last" -> what the study's
                      `block.output[0][-1] = 0.0` zeroes, in words; "pitfall.<id>" -> "raises" | "steered" |
                      "UNSTEERED without error" | "other ids without error" | "not expressible" (the two
                      tracer.result pitfalls), "correct" | "silently skipped" | "wrong steps [..]" | "raises"
                      (code_after_unbounded_iter, step_window); "recipe.<recipe>.<finding>" -> the verdict of a
                      steering recipe's spec finding; "ids" -> 16 hex digits over every arm's token ids (or error
                      type)
        ids_equal_reference       every arm's token ids equal the reference cell's for this model (null: not
                                  comparable: no reference record for the model)
        weights_equal_reference   the model's weights hash equals the reference cell's (null: as above); random
                                  models' weights change with transformers' initialisation, and then ids may too
    searches          one object per release search (equiv_core.audit.bisect.Bisection.to_dict): package, mode
                      ("bisect" | "sweep"), versions (oldest first), probes (version, status, reason, observables
                      as "<model>/<name>", seconds, built: false when refused without an environment), changes
                      (observable, before, after, last_before, first_after, skipped), seconds

Read it back with :func:`read_status`.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from equiv_core.audit.bisect import RELEASES, Bisection, read_searches
from equiv_core.audit.record import CellRecord, CellStatus, read_cells
from equiv_core.support.outputs import write_json

SCHEMA = "equiv-bench/audit-status"
SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class StatusRecord:
    """One (nnsight, transformers, torch, model) of one cell; see the module docstring for each field."""

    cell: str
    source: str
    status: CellStatus
    reason: str | None
    nnsight: str | None
    transformers: str | None
    torch: str | None
    python: str | None
    model: str | None
    observables: dict[str, str]
    ids_equal_reference: bool | None
    weights_equal_reference: bool | None


@dataclass(frozen=True, slots=True)
class AuditStatus:
    generated_at: str
    reference_cell: str
    records: tuple[StatusRecord, ...]
    searches: tuple[Bisection, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "generated_at": self.generated_at,
            "reference_cell": self.reference_cell,
            "records": [asdict(record) for record in self.records],
            "searches": [search.to_dict() for search in self.searches],
        }


def status_records(cells: list[CellRecord], source: str, reference: CellRecord | None) -> list[StatusRecord]:
    """The status rows of ``cells``: one per model that ran, one per cell that did not."""
    rows = []
    for cell in cells:
        versions = {name: cell.versions.get(name) for name in ("nnsight", "transformers", "torch", "python")}
        if cell.status != CellStatus.RAN:
            rows.append(
                StatusRecord(
                    cell.cell,
                    source,
                    cell.status,
                    cell.reason,
                    **versions,
                    model=None,
                    observables={},
                    ids_equal_reference=None,
                    weights_equal_reference=None,
                )
            )
            continue
        for model, record in cell.models.items():
            theirs = reference.models.get(model) if reference is not None else None
            rows.append(
                StatusRecord(
                    cell.cell,
                    source,
                    cell.status,
                    None,
                    **versions,
                    model=model,
                    observables=record.observables(),
                    ids_equal_reference=None if theirs is None else record.same_ids(theirs),
                    weights_equal_reference=None if theirs is None else record.weights_sha256 == theirs.weights_sha256,
                )
            )
    return rows


def build_status(directory: Path, reference: str) -> AuditStatus:
    """The status of the default matrix in ``directory`` and of every release search under ``releases/``."""
    cells = read_cells(directory)
    reference_cell = next((cell for cell in cells if cell.cell == reference and cell.status == CellStatus.RAN), None)
    records = status_records(cells, "matrix", reference_cell)
    searches = read_searches(directory)
    for search in searches:
        records += status_records(read_cells(directory / RELEASES / search.source), search.source, reference_cell)
    return AuditStatus(dt.datetime.now(dt.UTC).isoformat(), reference, tuple(records), tuple(searches))


def write_status(status: AuditStatus, path: Path) -> Path:
    """Write atomically (a temporary file renamed over ``path``)."""
    write_json(path, status.to_dict())
    return path


def read_status(path: Path) -> AuditStatus:
    """A status file read back; ValueError for another schema or version."""
    data = json.loads(path.read_text())
    if data.get("schema") != SCHEMA or data.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"{path}: schema {data.get('schema')!r} version {data.get('schema_version')!r}, "
            f"expected {SCHEMA!r} version {SCHEMA_VERSION}"
        )
    return AuditStatus(
        generated_at=data["generated_at"],
        reference_cell=data["reference_cell"],
        records=tuple(StatusRecord(**record) for record in data["records"]),
        searches=tuple(Bisection.from_dict(search) for search in data["searches"]),
    )
