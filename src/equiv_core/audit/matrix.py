"""The audit matrix, defined once: the default cells, the release ranges of the whole sweep and of bisection, and
how a cell id is spelled. Standard library only: ``noxfile.py`` imports it with nox's own interpreter."""

from __future__ import annotations

import re

# Packages whose versions every cell records and pins (the default environment's pins unless the cell changes one).
AUDITED = ("nnsight", "transformers", "torch", "mlflow")

# The fast default matrix of `nox -s audit`: each cell changes one pin of the default environment (None: the
# newest release on the package index at audit time).
DEFAULT_CELLS: dict[str, dict[str, str | None]] = {
    "nnsight='0.4.11'": {"nnsight": "0.4.11"},
    "nnsight='0.5.15'": {"nnsight": "0.5.15"},
    "nnsight='0.6.3'": {"nnsight": "0.6.3"},
    "nnsight='0.7.0'": {"nnsight": "0.7.0"},
    "nnsight='0.8.1'": {"nnsight": "0.8.1"},
    "transformers='4.57.6'": {"transformers": "4.57.6"},
    "transformers='5.2.0'": {"transformers": "5.2.0"},
    "transformers='latest'": {"transformers": None},
    "torch='2.13.0'": {"torch": "2.13.0"},
    "torch='2.14.1'": {"torch": "2.14.1"},
}
REFERENCE_CELL = "nnsight='0.8.1'"  # the default environment's pins: what other cells' token ids are compared with

# The whole sweep and bisection cover every nnsight release from 0.4.0 and the newest patch of every transformers
# minor from 4.57, to the newest on the package index (the releases are read from it at run time).
SWEEP_FROM = {"nnsight": "0.4.0", "transformers": "4.57"}
SWEEP_PER_MINOR = {"nnsight": False, "transformers": True}
# The bisection runs one small model (seconds per environment): GPT-2 shape, where the block output form changed.
BISECT_MODELS = ("tiny-gpt2",)

# The report's nnsight section compares the other nnsight cells of DEFAULT_CELLS with this one (0.6.3: the first
# release with the for-loop form of iter, so every later form has a baseline written the same way).
NNSIGHT_BASE_CELL = "nnsight='0.6.3'"


def nnsight_cells() -> tuple[str, ...]:
    """The cells of :data:`DEFAULT_CELLS` that pin nnsight, in matrix order."""
    return tuple(cell for cell, pins in DEFAULT_CELLS.items() if "nnsight" in pins)


def cell_id(package: str, version: str | None) -> str:
    """The id of the cell that pins ``package`` to ``version`` (None: the newest), e.g. ``nnsight='0.7.0'``."""
    return f"{package}='{version or 'latest'}'"


def is_cell_id(cell: str) -> bool:
    """Whether ``cell`` is spelled as :func:`cell_id` spells one: ``package='version'`` (or ``'latest'``) with
    ``package`` one of :data:`AUDITED`."""
    match = re.fullmatch(r"(\w+)='(latest|\d+(\.\d+)*)'", cell)
    return match is not None and match.group(1) in AUDITED


def is_source(source: str) -> bool:
    """Whether ``source`` names where a cell comes from: ``matrix``, or a release search (``bisect-nnsight``)."""
    mode, _, package = source.partition("-")
    return source == "matrix" or (mode in ("bisect", "sweep") and package in AUDITED)


def version_key(version: str) -> tuple[int, ...]:
    """Release order of plain numeric versions (``5.10.1`` after ``5.9.0``); pre-releases are not audited."""
    return tuple(int(part) for part in version.split("."))


def is_release(version: str) -> bool:
    """A final release (digits and dots only: no rc, dev or post)."""
    return re.fullmatch(r"\d+(\.\d+)*", version) is not None


def sweep_versions(package: str, available: list[str]) -> list[str]:
    """The releases the whole sweep covers, oldest first: every release from ``SWEEP_FROM`` (nnsight), or the
    newest patch of each minor from it (transformers)."""
    start = version_key(SWEEP_FROM[package])
    releases = sorted((v for v in available if is_release(v) and version_key(v) >= start), key=version_key)
    if not SWEEP_PER_MINOR[package]:
        return releases
    newest: dict[tuple[int, ...], str] = {}
    for version in releases:
        newest[version_key(version)[:2]] = version  # sorted: the last of a minor is its newest patch
    return list(newest.values())
