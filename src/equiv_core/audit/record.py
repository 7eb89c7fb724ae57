"""The audit cell record: what one environment (one cell of the matrix) showed, typed, and its one file format.

Read and written only here (``<cell slug>.json`` beside a ``.npz`` of logits), by the cell, the report, the status
table, the bisection and ``noxfile.py``, which imports this module with nox's own interpreter: standard library
only (and equiv_core's own standard-library modules), no torch, no numpy.

A cell's ``status`` is ``ran`` (``models`` holds one :class:`ModelRecord` per model), ``unsupported`` (the pinned
versions could not be installed or imported on this Python: ``reason`` says why) or ``error`` (the cell process
crashed: ``reason`` holds its last error line).
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from equiv_core.findings.verdict import Verdict
from equiv_core.support.outputs import write_json

CELL_FORMAT = 2  # version of the cell file; 1 was the untyped dict of the first audit
LITERAL_EDIT = "literal_output0_last"  # the observable: what `block.output[0][-1] = 0.0` edits (an MLflow-safe name)


def cell_slug(cell: str) -> str:
    """A file-name-safe form of a cell id like ``nnsight='0.7.0'``."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", cell).strip("-")


@dataclass(frozen=True, slots=True)
class FindingVerdict:
    verdict: Verdict
    message: str


@dataclass(frozen=True, slots=True)
class LiteralEdit:
    """What the original study's literal ``block.output[0][index] = 0.0`` zeroed at ``layer``: ``zeroed`` as
    (batch, position) pairs, or ``error`` when it raised; ``meaning`` in plain words."""

    index: int
    layer: int
    zeroed: tuple[tuple[int, int], ...] | None
    error: str | None
    meaning: str


@dataclass(frozen=True, slots=True)
class ArmOutcome:
    """One benchmark arm's generation on the cell's default input, or the error it raised."""

    ids: tuple[int, ...] | None = None
    logits_sha256: str | None = None
    steering_applied: bool | None = None  # ids differ from the unsteered arm's (None: unsteered arm itself)
    ids_match_hook: bool | None = None  # ids equal the raw hook's (None: unsteered arm, or hook failed)
    error: str | None = None


class CellStatus(enum.StrEnum):
    """How far a cell got: it ``ran``; its pins could not be installed or imported on this Python
    (``unsupported``); or its process crashed (``error``)."""

    RAN = "ran"
    UNSUPPORTED = "unsupported"
    ERROR = "error"


class Pitfall(enum.StrEnum):
    """What a known-bad nnsight pattern (:mod:`equiv_core.audit.probes`) does in one environment. Raising is the
    safe behaviour; the :attr:`silent` ones return without an error and do something else than the code says."""

    RAISES = "raises"
    STEERED = "steered"
    UNSTEERED = "UNSTEERED without error"
    OTHER_IDS = "other ids without error"
    NOT_EXPRESSIBLE = "not expressible"
    CORRECT = "correct"
    SILENTLY_SKIPPED = "silently skipped"
    WRONG_STEPS = "wrong steps"  # a step window fired at other steps (the detail says which)

    @property
    def silent(self) -> bool:
        """No error, and not what the code says: such code silently does something else on this version."""
        return self in (Pitfall.UNSTEERED, Pitfall.OTHER_IDS, Pitfall.SILENTLY_SKIPPED, Pitfall.WRONG_STEPS)


@dataclass(frozen=True, slots=True)
class PitfallOutcome:
    """What a known-bad nnsight pattern does here: raising is safe; ``UNSTEERED without error`` is the danger."""

    outcome: Pitfall
    detail: str
    pattern: str


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """One model in one cell."""

    block_output_form: str  # "tensor" or "tuple": what a decoder block returns here
    layers_path: str
    prompt_length: int
    findings: dict[str, FindingVerdict]
    literal_output0_edit: tuple[LiteralEdit, ...]  # index -1 first, then n-1
    arms: dict[str, ArmOutcome]
    pitfalls: dict[str, PitfallOutcome]
    recipes: dict[str, dict[str, FindingVerdict]]  # steering recipe -> spec finding -> verdict
    fingerprint: str
    weights_sha256: str

    def arm_ids(self) -> dict[str, list[int] | str]:
        """Every arm's token ids, or the type of the error it raised (never its message: paths and line numbers)."""
        return {
            arm: list(outcome.ids) if outcome.ids is not None else (outcome.error or "error").split(":")[0]
            for arm, outcome in self.arms.items()
        }

    def ids_digest(self) -> str:
        """16 hex digits over :meth:`arm_ids`: equal digests, equal generations."""
        return hashlib.sha256(json.dumps(self.arm_ids(), sort_keys=True).encode()).hexdigest()[:16]

    def same_ids(self, other: ModelRecord) -> bool:
        """The same arms, each with the same token ids (or the same error type) as in ``other``."""
        return self.arm_ids() == other.arm_ids()

    def observables(self) -> dict[str, str]:
        """Everything that may change between releases, as ``name -> value`` (the status table's columns and
        what the bisection looks for): each finding's verdict, the block output form, what the literal
        ``output[0][-1] = 0`` edits, each pitfall's outcome, each steering recipe's spec-finding verdicts, and the
        token ids of every arm (as a digest)."""
        values: dict[str, str] = {f"finding.{name}": verdict.verdict for name, verdict in self.findings.items()}
        values["block_output_form"] = self.block_output_form
        values[LITERAL_EDIT] = self.literal_output0_edit[0].meaning
        values |= {f"pitfall.{name}": outcome.outcome for name, outcome in self.pitfalls.items()}
        values |= {
            f"recipe.{recipe}.{finding}": verdict.verdict
            for recipe, findings in self.recipes.items()
            for finding, verdict in findings.items()
        }
        values["ids"] = self.ids_digest()
        return values


@dataclass(frozen=True, slots=True)
class CellRecord:
    """One cell of the audit: the pins asked for, the versions found, and one record per model."""

    cell: str
    status: CellStatus
    reason: str | None = None
    pins: dict[str, str | None] = field(default_factory=dict)  # package -> version asked for (None: newest)
    versions: dict[str, str] = field(default_factory=dict)  # package -> version installed (and "python")
    models: dict[str, ModelRecord] = field(default_factory=dict)
    pip_freeze: tuple[str, ...] = ()
    finished_at: str | None = None  # ISO 8601, UTC
    seconds: float | None = None
    mlflow_run_id: str | None = None

    @property
    def slug(self) -> str:
        return cell_slug(self.cell)

    def to_dict(self) -> dict[str, Any]:
        return {"format": CELL_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellRecord:
        """The record of a cell file; ValueError naming what is wrong for a file of another format."""
        if data.get("format") != CELL_FORMAT:
            found = data.get("format")
            raise ValueError(f"cell file format {found!r}, expected {CELL_FORMAT}: written by another version")
        return cls(
            cell=data["cell"],
            status=CellStatus(data["status"]),
            reason=data.get("reason"),
            pins=dict(data.get("pins", {})),
            versions=dict(data.get("versions", {})),
            models={name: _model_from_dict(model) for name, model in data.get("models", {}).items()},
            pip_freeze=tuple(data.get("pip_freeze", ())),
            finished_at=data.get("finished_at"),
            seconds=data.get("seconds"),
            mlflow_run_id=data.get("mlflow_run_id"),
        )

    def write(self, directory: Path) -> Path:
        """Write ``<slug>.json`` atomically (a temporary file renamed over it: never half-written)."""
        directory.mkdir(parents=True, exist_ok=True)
        target = directory / f"{self.slug}.json"
        write_json(target, self.to_dict())
        return target

    @classmethod
    def read(cls, path: Path) -> CellRecord:
        return cls.from_dict(json.loads(path.read_text()))


def read_cells(directory: Path) -> list[CellRecord]:
    """Every cell record in ``directory``, in file-name order (other JSON files there, e.g. status.json, skipped).
    Raises ValueError naming the file for one that is not JSON or of another format."""
    cells = []
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict) and "cell" in data and "status" in data:
                cells.append(CellRecord.from_dict(data))
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a cell record ({error})") from None
    return cells


def _verdict(data: dict[str, Any]) -> FindingVerdict:
    return FindingVerdict(Verdict(data["verdict"]), data["message"])


def _model_from_dict(data: dict[str, Any]) -> ModelRecord:
    return ModelRecord(
        block_output_form=data["block_output_form"],
        layers_path=data["layers_path"],
        prompt_length=data["prompt_length"],
        findings={name: _verdict(verdict) for name, verdict in data["findings"].items()},
        literal_output0_edit=tuple(
            LiteralEdit(
                index=edit["index"],
                layer=edit["layer"],
                zeroed=None if edit["zeroed"] is None else tuple((int(b), int(p)) for b, p in edit["zeroed"]),
                error=edit["error"],
                meaning=edit["meaning"],
            )
            for edit in data["literal_output0_edit"]
        ),
        arms={
            name: ArmOutcome(**{**outcome, "ids": None if outcome.get("ids") is None else tuple(outcome["ids"])})
            for name, outcome in data["arms"].items()
        },
        pitfalls={
            name: PitfallOutcome(Pitfall(outcome["outcome"]), outcome["detail"], outcome["pattern"])
            for name, outcome in data["pitfalls"].items()
        },
        recipes={
            recipe: {name: _verdict(verdict) for name, verdict in findings.items()}
            for recipe, findings in data["recipes"].items()
        },
        fingerprint=data["fingerprint"],
        weights_sha256=data["weights_sha256"],
    )
