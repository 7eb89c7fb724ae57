"""The conformance records: what one cell showed (:class:`CellRecord`), what one library environment ran
(:class:`EnvironmentRecord`, one ``<environment id>.json`` file each), and their one file format.

Read and written only here, by the cell, the table, the status file and ``noxfile.py`` (which imports this module
with nox's own interpreter: standard library only).

A cell's :class:`CellState` uses the names of nnsight's own benchmark (nnbench, ndif-team 2026; shared NOTES):
SUPPORTED, SUPPORTED_DEGRADED, SILENTLY_WRONG, ERROR, NOT_EXPRESSIBLE.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from equiv_core.config.check import Form
from equiv_core.conformance.intents import Intent, Variant
from equiv_core.conformance.matrix import LibraryEnvironment
from equiv_core.findings.verdict import Verdict
from equiv_core.support.outputs import write_json

RECORD_FORMAT = 1


class CellState(enum.StrEnum):
    """What one (library, version, intent, model) cell showed against the raw-hook reference of the intent.

    - ``SUPPORTED``: touched exactly the intended (step, layer, position) cells, token ids equal the reference's,
      logits bit-identical or within the noise floor the unsteered model shows in the same run.
    - ``SUPPORTED_DEGRADED``: as intended, same ids, but logits beyond that floor (the measured difference is in
      the record), e.g. a library that switches the attention kernel.
    - ``SILENTLY_WRONG``: ran without an error but touched other cells than intended, or its ids differ from the
      reference's, or it changed nothing, or it left steering or swapped modules behind, or it removed hooks it did
      not register (what it touched then cannot be observed).
    - ``ERROR``: the library (or the user code written its way) raised: the step and the error line.
    - ``NOT_EXPRESSIBLE``: the library cannot say the intent (``reason``: the library's own, from its docs or code).
    - ``NO_REFERENCE`` (nnbench's name for a cell it cannot judge): the harness could not judge it: what the library
      did cannot be observed (TransformerLens bypasses GPT-2's final norm), the intent changes nothing even in the
      reference, or the harness itself failed (``reason`` says which); never blamed on the library.
    """

    SUPPORTED = "SUPPORTED"
    SUPPORTED_DEGRADED = "SUPPORTED_DEGRADED"
    SILENTLY_WRONG = "SILENTLY_WRONG"
    ERROR = "ERROR"
    NOT_EXPRESSIBLE = "NOT_EXPRESSIBLE"
    NO_REFERENCE = "NO_REFERENCE"


class EnvironmentStatus(enum.StrEnum):
    """How far an environment got: it ``ran`` its cells; it could not be built or its library not imported
    (``unsupported``, ``reason`` says why); its cell process crashed (``error``)."""

    RAN = "ran"
    UNSUPPORTED = "unsupported"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class FirstDifference:
    """The first generated token where the library's ids and the reference's part: ``step`` (0: the first new
    token) and both ids and texts."""

    step: int
    library_id: int
    reference_id: int
    library_text: str
    reference_text: str


@dataclass(frozen=True, slots=True)
class CellRecord:
    """One cell. ``reason``: one line saying why this state (the failing findings' messages, the error, the
    library's reason for NOT_EXPRESSIBLE; for SUPPORTED, how close). ``grid``: the step x position grid of the
    library's observed touches at the steered layers (kept for every cell that ran). ``logits_max_abs_diff`` and
    ``noise_floor``: the largest logit difference from the reference over steps with identical inputs, and the
    allowance measured on the unsteered model (0.0: not needed, the logits were bit-identical)."""

    library: str
    version: str
    intent: Intent
    variant: Variant
    model: str
    state: CellState
    reason: str
    follows: str
    form: Form
    note: str = ""
    attn_implementation: str | None = None
    touched_as_intended: bool | None = None
    ids_equal: bool | None = None
    logits_bit_identical: bool | None = None
    logits_max_abs_diff: float | None = None
    noise_floor: float | None = None
    first_difference: FirstDifference | None = None
    library_ids: tuple[int, ...] = ()
    reference_ids: tuple[int, ...] = ()
    grid: tuple[str, ...] = ()
    findings: dict[str, Verdict] = field(default_factory=dict)  # finding id -> verdict
    weights_sha256: str = ""  # the weights as the check loaded them, before the library ran: the same everywhere
    left_behind: tuple[str, ...] = ()  # hooks or modules left on the model, changing no later output (the first 10)
    left_behind_total: int = 0  # how many there were
    seconds: float = 0.0

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        return (self.library, self.version, self.intent, self.variant, self.model)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellRecord:
        first = data.get("first_difference")
        return cls(
            **{
                **data,
                "state": CellState(data["state"]),
                "intent": Intent(data["intent"]),
                "variant": Variant(data["variant"]),
                "form": Form(data["form"]),
                "findings": {name: Verdict(verdict) for name, verdict in data.get("findings", {}).items()},
                "first_difference": FirstDifference(**first) if first else None,
                "library_ids": tuple(data.get("library_ids", ())),
                "reference_ids": tuple(data.get("reference_ids", ())),
                "grid": tuple(data.get("grid", ())),
                "left_behind": tuple(data.get("left_behind", ())),
            }
        )


@dataclass(frozen=True, slots=True)
class EnvironmentRecord:
    """One library environment: its id, library and version, status, the versions installed (library, torch,
    transformers, nnsight, numpy, python), the models run, its cells, and when and how long."""

    environment: str
    library: str
    version: str
    status: EnvironmentStatus
    reason: str = ""
    requirements: tuple[str, ...] = ()
    versions: dict[str, str] = field(default_factory=dict)
    models: tuple[str, ...] = ()
    cells: tuple[CellRecord, ...] = ()
    finished_at: str = ""
    seconds: float = 0.0
    mlflow_run_id: str | None = None
    format: int = RECORD_FORMAT

    @property
    def slug(self) -> str:
        return environment_slug(self.environment)

    @classmethod
    def not_run(cls, environment: LibraryEnvironment, status: EnvironmentStatus, reason: str) -> EnvironmentRecord:
        """The record of an environment that ran no cell: it could not be built or imported (``unsupported``), or
        its process failed outside any cell (``error``); ``reason`` in one line."""
        return cls(
            environment=environment.id,
            library=environment.library,
            version=environment.version,
            status=status,
            reason=reason,
            requirements=environment.requirements,
            finished_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def write(self, directory: Path) -> Path:
        """Write ``<slug>.json`` in ``directory`` (whole or not at all)."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.slug}.json"
        write_json(path, self.to_dict())
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnvironmentRecord:
        if data.get("format") != RECORD_FORMAT:
            raise ValueError(f"conformance record format {data.get('format')!r}, expected {RECORD_FORMAT}")
        return cls(
            **{
                **data,
                "status": EnvironmentStatus(data["status"]),
                "requirements": tuple(data.get("requirements", ())),
                "models": tuple(data.get("models", ())),
                "cells": tuple(CellRecord.from_dict(cell) for cell in data.get("cells", ())),
            }
        )

    @classmethod
    def read(cls, path: Path) -> EnvironmentRecord:
        """Read one record (ValueError naming the file for one that is not a conformance record)."""
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: not a conformance record ({error})") from None


def environment_slug(environment: str) -> str:
    """A file-name-safe form of an environment id (``steering-vectors-0.12.2``)."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", environment).strip("-")


def read_environments(directory: Path) -> list[EnvironmentRecord]:
    """Every environment record in ``directory`` (``*.json`` but the status file), in file-name order."""
    return [EnvironmentRecord.read(path) for path in sorted(directory.glob("*.json")) if path.name != STATUS_FILE]


STATUS_FILE = "conformance-status.json"
