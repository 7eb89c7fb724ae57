"""What a cell of a matrix is, defined once for every engine that runs one (``noxfile.py`` locally, Ray on a
cluster): its kind, its id, the versions it pins, the models it runs and the ``equiv`` command that runs it.

Standard library only: ``noxfile.py`` imports it with nox's own interpreter.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from equiv_core.audit.bisect import search_source
from equiv_core.audit.matrix import AUDITED, BISECT_MODELS, DEFAULT_CELLS, cell_id, version_key
from equiv_core.audit.record import CellRecord, CellStatus, cell_slug
from equiv_core.config.catalog import AUDIT_EXPERIMENT, CONFORMANCE_EXPERIMENT, DEFAULT_EXPERIMENT, MIN_RELEASE
from equiv_core.conformance.matrix import ENVIRONMENTS, MODELS, LibraryEnvironment
from equiv_core.conformance.record import EnvironmentRecord, EnvironmentStatus, environment_slug
from equiv_core.support.outputs import write_json

DEFAULT_AUDIT_MODELS = ("smollm2-135m", "tiny-gpt2")

# An audit cell's import check, run before the cell: a version whose nnsight the harness cannot drive is
# `unsupported` with the import's reason, not a crashed cell.
AUDIT_IMPORT_CHECK = (
    "import equiv_core.cli.main, equiv_core.audit.cell; from equiv_core.arms.nnsight import check_supported as c; c()"
)


class CellKind(enum.StrEnum):
    """Which matrix a cell belongs to: the version audit (``equiv audit-cell``), the steering-library conformance
    (``equiv conformance-cell``, one library's environment), or the benchmark's record (``equiv bench`` of one
    model and dtype on one device: the GPU record is two such cells on a GPU node)."""

    AUDIT = "audit"
    CONFORMANCE = "conformance"
    BENCH = "bench"


# The MLflow experiment each kind of cell logs to (passed to the cell as --experiment, and where the driver ends the
# runs of a task that died).
EXPERIMENTS = {
    CellKind.AUDIT: AUDIT_EXPERIMENT,
    CellKind.CONFORMANCE: CONFORMANCE_EXPERIMENT,
    CellKind.BENCH: DEFAULT_EXPERIMENT,
}


class NotRun(enum.StrEnum):
    """Why a cell has no result of its own: its environment could not be built or imported (``unsupported``), or
    its process died or crashed (``error``)."""

    UNSUPPORTED = "unsupported"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class BenchSetting:
    """What a bench cell times: ``dtype`` and ``device`` as ``equiv bench`` takes them, and ``new_tokens`` (empty:
    the device's default sweep, 8 to 512 on CUDA); every arm, ``floor`` included."""

    dtype: str
    device: str
    new_tokens: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class BenchNotRun:
    """The record of a bench cell that did not run, in place of ``equiv bench``'s JSON (which has no ``status``)."""

    cell: str
    status: NotRun
    reason: str

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {"cell": self.cell, "status": str(self.status), "reason": self.reason})
        return path


# The benchmark's GPU record (issue 23): gpt2-small-random (seeded random weights: no file), float32 and bfloat16,
# every arm including floor, 8 to 512 new tokens (equiv bench's defaults on CUDA).
GPU_MODEL = "gpt2-small-random"
GPU_RECORD = (BenchSetting("float32", "cuda"), BenchSetting("bfloat16", "cuda"))


@dataclass(frozen=True, slots=True)
class Cell:
    """One cell: ``pins`` are the audited packages' versions it runs with (package -> version; None: the newest
    release), ``requirements`` everything it asks pip for (the pins, and a library environment's own
    requirements), ``models`` the models it runs. ``source`` is the audit's ``matrix`` or a release search."""

    kind: CellKind
    id: str
    pins: Mapping[str, str | None]
    requirements: tuple[str, ...]
    models: tuple[str, ...]
    source: str = "matrix"
    gpus: int = 0
    library: LibraryEnvironment | None = field(default=None, compare=False)
    bench: BenchSetting | None = None

    @property
    def slug(self) -> str:
        """The file name (without ``.json``) of the cell's record in its results directory."""
        return environment_slug(self.id) if self.kind == CellKind.CONFORMANCE else cell_slug(self.id)

    @property
    def newest(self) -> bool:
        """A pin of ``latest``: pip is asked for the newest release (``--upgrade``) every time, never a cached
        environment's."""
        return None in self.pins.values()

    @property
    def result_exit_codes(self) -> tuple[int, ...]:
        """The exit statuses with which the cell's command has a result: 0, and for ``equiv bench`` 1 (an arm
        incorrect: the JSON says which)."""
        return (0, 1) if self.kind == CellKind.BENCH else (0,)

    def outcome_of(self, record: str) -> tuple[str, str]:
        """The status (``ran``, ``unsupported`` or ``error``) and reason of a record of this cell, from its text."""
        data = json.loads(record)
        if self.kind == CellKind.BENCH and "status" not in data:
            return "ran", ""  # equiv bench's own JSON: the cell ran (its arms' verdicts are inside)
        return str(data["status"]), str(data.get("reason") or "")

    @property
    def import_check(self) -> str | None:
        """Python code run before the cell in its environment (None: none); failing it makes the cell
        ``unsupported``."""
        return AUDIT_IMPORT_CHECK if self.kind == CellKind.AUDIT else None

    def arguments(self, out: Path, tracking_uri: str | None = None) -> list[str]:
        """The arguments of ``python -m equiv_core`` that run this cell, writing its record into ``out``."""
        tracking = ["--tracking-uri", tracking_uri, "--experiment", EXPERIMENTS[self.kind]] if tracking_uri else []
        models = ",".join(self.models)
        if self.kind == CellKind.CONFORMANCE:
            return ["conformance-cell", "--environment", self.id, "--models", models, "--out", str(out), *tracking]
        if self.kind == CellKind.BENCH:
            assert self.bench is not None
            setting = self.bench
            sizes = ["--new-tokens", ",".join(map(str, setting.new_tokens))] if setting.new_tokens else []
            command = ["bench", "--model", models, "--dtype", setting.dtype, "--device", setting.device, *sizes]
            record = out / f"{self.slug}.json"
            plot = out / f"{self.slug}.png"
            return [*command, "--json", str(record), "--plot", str(plot), "--no-progress", *tracking]
        pins = [f"--pin={package}={version or 'latest'}" for package, version in self.pins.items()]
        command = ["audit-cell", "--cell", self.id, "--models", models, "--out", str(out), "--source", self.source]
        return [*command, *pins, *tracking]

    def record_not_run(self, why: NotRun, reason: str, out: Path) -> Path:
        """Write the record of this cell having no result of its own (``reason`` in one line) into ``out``, in its
        kind's format, in place of any older one; returns its path."""
        if self.kind == CellKind.CONFORMANCE:
            assert self.library is not None
            return EnvironmentRecord.not_run(self.library, EnvironmentStatus(why.value), reason).write(out)
        if self.kind == CellKind.BENCH:
            return BenchNotRun(self.id, why, reason).write(out / f"{self.slug}.json")
        (out / f"{self.slug}.npz").unlink(missing_ok=True)  # an older run's logits must not pass for this one's
        return CellRecord(cell=self.id, status=CellStatus(why.value), reason=reason, pins=dict(self.pins)).write(out)


def pinned_versions(constraints: Path, packages: tuple[str, ...] = AUDITED) -> dict[str, str]:
    """The versions ``constraints`` (constraints.txt: ``package==version`` lines) pins for ``packages``; ValueError
    naming the first that it does not pin."""
    text = constraints.read_text()
    versions = {}
    for package in packages:
        match = re.search(rf"^{re.escape(package)}==(\S+)$", text, re.MULTILINE)
        if match is None:
            raise ValueError(f"{package} is not pinned in {constraints}")
        versions[package] = match.group(1)
    return versions


def requirement(package: str, version: str | None) -> str:
    """pip's spelling of a pin (``nnsight==0.7.0``; the package alone for the newest release)."""
    return f"{package}=={version}" if version else package


def audit_cell(
    cell: str,
    changes: Mapping[str, str | None],
    defaults: Mapping[str, str],
    models: tuple[str, ...] = DEFAULT_AUDIT_MODELS,
    source: str = "matrix",
) -> Cell:
    """The audit cell ``cell``: the default environment's versions of the audited packages (``defaults``) with
    ``changes``."""
    pins: dict[str, str | None] = {**defaults, **changes}
    requirements = tuple(requirement(package, version) for package, version in pins.items())
    return Cell(CellKind.AUDIT, cell, pins, requirements, models, source)


def conformance_cell(
    library: LibraryEnvironment, defaults: Mapping[str, str], models: tuple[str, ...] = MODELS
) -> Cell:
    """One library's conformance environment: its own requirements, and the default environment's versions of the
    audited packages its requirements do not name (as an audit cell is built)."""
    named = {re.split(r"[=<>!~\[ ]", item)[0] for item in library.requirements}
    pins = {package: version for package, version in defaults.items() if package not in named}
    requirements = (*library.requirements, *(requirement(package, version) for package, version in pins.items()))
    return Cell(CellKind.CONFORMANCE, library.id, pins, requirements, models, library=library)


def bench_cell(model: str, setting: BenchSetting, defaults: Mapping[str, str]) -> Cell:
    """One ``equiv bench`` of ``model`` in the default environment; on CUDA it asks Ray for one GPU."""
    pins = dict(defaults)
    requirements = tuple(requirement(package, version) for package, version in pins.items())
    cell_id = f"bench {model} {setting.dtype} {setting.device}"
    gpus = 1 if setting.device.startswith("cuda") else 0
    return Cell(CellKind.BENCH, cell_id, pins, requirements, (model,), gpus=gpus, bench=setting)


def too_old(package: str, version: str) -> str:
    """Why a release is older than the harness supports (``MIN_RELEASE``): recorded as unsupported without building
    anything; "" for a release it supports."""
    oldest = MIN_RELEASE.get(package)
    if oldest is None or version_key(version) >= version_key(oldest):
        return ""
    return f"older than the harness supports ({package} >= {oldest}: equiv_core.config.catalog.MIN_RELEASE)"


def sweep_cells(package: str, versions: list[str], defaults: Mapping[str, str]) -> list[Cell]:
    """The release sweep's cells: one per release of ``package`` (``versions``, oldest first), on the bisection's
    models, each with source ``sweep-<package>``."""
    source = search_source("sweep", package)
    return [
        audit_cell(cell_id(package, version), {package: version}, defaults, BISECT_MODELS, source)
        for version in versions
    ]


def matrix(
    kind: CellKind,
    defaults: Mapping[str, str],
    models: tuple[str, ...] | None = None,
    only: tuple[str, ...] = (),
    bench: tuple[BenchSetting, ...] = GPU_RECORD,
) -> list[Cell]:
    """The cells of the default audit matrix, of the conformance matrix, or of the benchmark's record (one cell per
    model and ``bench`` setting: by default the GPU record, gpt2-small-random in float32 and bfloat16 on CUDA).
    ``only``: those ids, in matrix order; ValueError naming the valid ids for one that is not in it."""
    if kind == CellKind.BENCH:
        cells = [bench_cell(model, setting, defaults) for model in models or (GPU_MODEL,) for setting in bench]
    elif kind == CellKind.AUDIT:
        cells = [
            audit_cell(cell, changes, defaults, models or DEFAULT_AUDIT_MODELS)
            for cell, changes in DEFAULT_CELLS.items()
        ]
    else:
        cells = [conformance_cell(library, defaults, models or MODELS) for library in ENVIRONMENTS]
    unknown = [cell for cell in only if cell not in {c.id for c in cells}]
    if unknown:
        raise ValueError(f"no {kind} cell {unknown[0]!r}; valid: {', '.join(c.id for c in cells)}")
    return [cell for cell in cells if not only or cell.id in only]
