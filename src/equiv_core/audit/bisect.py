"""First-changed-release search over one package's releases: by bisection (about log2(n) environments per change)
or by sweeping every release (n environments), with the same record.

An *observable* is one ``model/name`` value of :meth:`equiv_core.audit.record.ModelRecord.observables` (a
finding's verdict, the block output form, what the literal ``output[0][-1] = 0`` edits, a pitfall's outcome, the
token ids). Bisection assumes an observable that is equal at both ends of a range did not change inside it, unless a
release probed there for another observable shows otherwise (a value that changes and changes back between two
probes is invisible to it; the sweep sees it), and splits every range whose ends differ until the two ends are
neighbouring releases: "changed between X and Y". Releases that cannot be installed or
imported on this Python are probed once, recorded with their reason, and stepped over: a change across them is
reported between the nearest releases that ran, naming the ones skipped.

Standard library only: ``noxfile.py`` runs it with nox's own interpreter; the environments are its business
(``probe`` builds one and returns what it showed).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from equiv_core.audit.record import CellRecord, CellStatus
from equiv_core.support.outputs import write_json

Mode = Literal["bisect", "sweep"]
RELEASES = "releases"  # under an audit results folder: <source>.json per search, its cell records in <source>/


def search_source(mode: Mode, package: str) -> str:
    """The name of one search's records (its JSON file, its cells' folder, their ``audit_source`` tag)."""
    return f"{mode}-{package}"


@dataclass(frozen=True, slots=True)
class Probe:
    """One release, in one environment: whether it ran, and every observable (``model/name -> value``)."""

    version: str
    status: CellStatus
    reason: str | None
    observables: dict[str, str]
    seconds: float  # installing and running the cell
    built: bool = True  # an environment was built (False: refused up front, e.g. older than the harness supports)

    @classmethod
    def of_cell(cls, version: str, cell: CellRecord, seconds: float) -> Probe:
        values = {
            f"{model}/{name}": value
            for model, record in cell.models.items()
            for name, value in record.observables().items()
        }
        return cls(version, cell.status, cell.reason, values, seconds)


@dataclass(frozen=True, slots=True)
class Change:
    """``observable`` was ``before`` up to release ``last_before`` and ``after`` from ``first_after`` on."""

    observable: str
    before: str
    after: str
    last_before: str
    first_after: str
    skipped: tuple[str, ...] = ()  # releases between the two that could not be probed

    def sentence(self, package: str) -> str:
        gap = f" ({', '.join(self.skipped)} could not run)" if self.skipped else ""
        return (
            f"{self.observable}: {self.before!r} -> {self.after!r}: changed between {package} "
            f"{self.last_before} and {self.first_after}{gap}"
        )


@dataclass(frozen=True, slots=True)
class Bisection:
    """What one search over ``package``'s releases found, and what it cost."""

    package: str
    mode: Mode
    versions: tuple[str, ...]  # the releases searched, oldest first
    probes: tuple[Probe, ...]  # one per environment built, in the order built
    changes: tuple[Change, ...]
    seconds: float

    @property
    def source(self) -> str:
        return search_source(self.mode, self.package)

    @property
    def unsupported(self) -> tuple[Probe, ...]:
        return tuple(probe for probe in self.probes if probe.status != CellStatus.RAN)

    @property
    def environments(self) -> int:
        """Environments built (releases refused up front, without one, not counted)."""
        return sum(probe.built for probe in self.probes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Bisection:
        return cls(
            package=data["package"],
            mode=data["mode"],
            versions=tuple(data["versions"]),
            probes=tuple(Probe(**{**probe, "status": CellStatus(probe["status"])}) for probe in data["probes"]),
            changes=tuple(Change(**{**change, "skipped": tuple(change["skipped"])}) for change in data["changes"]),
            seconds=data["seconds"],
        )

    def write(self, path: Path) -> Path:
        """Write atomically (a temporary file renamed over ``path``)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, self.to_dict())
        return path

    @classmethod
    def read(cls, path: Path) -> Bisection:
        return cls.from_dict(json.loads(path.read_text()))


def read_searches(audit_results: Path) -> list[Bisection]:
    """Every release search recorded under ``audit_results``/releases, in file-name order (none: empty)."""
    folder = audit_results / RELEASES
    return [Bisection.read(path) for path in sorted(folder.glob("*.json"))] if folder.is_dir() else []


class _Search:
    """The probes made so far (each release at most once) and the changes found."""

    def __init__(self, versions: list[str], probe: Callable[[str], Probe], say: Callable[[str], None]) -> None:
        self.versions = versions
        self._probe = probe
        self.say = say
        self.probes: dict[int, Probe] = {}
        self.order: list[Probe] = []

    def at(self, index: int) -> Probe:
        if index not in self.probes:
            self.say(f"probing {self.versions[index]} (release {len(self.order) + 1} probed of {len(self.versions)})")
            result = self._probe(self.versions[index])
            self.probes[index] = result
            self.order.append(result)
        return self.probes[index]

    def ran(self, index: int) -> bool:
        return self.at(index).status == CellStatus.RAN

    def supported_between(self, low: int, high: int) -> int | None:
        """A release strictly between ``low`` and ``high`` that runs, probing outwards from the middle."""
        middle = (low + high) // 2
        for index in sorted(range(low + 1, high), key=lambda index: (abs(index - middle), index)):
            if self.ran(index):
                return index
        return None

    def first_supported(self, indices: range) -> int | None:
        return next((index for index in indices if self.ran(index)), None)

    def change(self, name: str, low: int, high: int) -> Change:
        skipped = tuple(self.versions[i] for i in range(low + 1, high))
        return Change(
            name,
            self.at(low).observables.get(name, "absent"),
            self.at(high).observables.get(name, "absent"),
            self.versions[low],
            self.versions[high],
            skipped,
        )

    def split(self, name: str, low: int, high: int) -> list[Change]:
        """Changes of ``name`` between two releases that ran (both probed). Equal ends are taken to mean no change
        inside, unless a release already probed there (for another observable) shows otherwise."""
        value = self.at(low).observables.get(name, "absent")
        if value == self.at(high).observables.get(name, "absent"):
            differing = [
                index
                for index, probe in sorted(self.probes.items())
                if low < index < high
                and probe.status == CellStatus.RAN
                and probe.observables.get(name, "absent") != value
            ]
            if not differing:
                return []
            return self.split(name, low, differing[0]) + self.split(name, differing[0], high)
        middle = self.supported_between(low, high)
        if middle is None:
            return [self.change(name, low, high)]
        return self.split(name, low, middle) + self.split(name, middle, high)


def search(
    package: str,
    versions: list[str],
    probe: Callable[[str], Probe],
    mode: Mode = "bisect",
    say: Callable[[str], None] | None = None,
) -> Bisection:
    """Find every release of ``package`` (``versions``: oldest first) where an observable changes.

    ``probe(version)`` builds an environment with that release and returns what it showed. ``bisect`` probes the
    ends and splits ranges whose ends differ; ``sweep`` probes every release. Raises ValueError for an empty range.
    """
    if not versions:
        raise ValueError(f"no {package} releases to search")
    started = time.perf_counter()
    state = _Search(versions, probe, say or (lambda _message: None))
    changes: list[Change] = []
    if mode == "sweep":
        ran = [index for index in range(len(versions)) if state.ran(index)]
        for low, high in zip(ran, ran[1:], strict=False):
            names = sorted(set(state.at(low).observables) | set(state.at(high).observables))
            changes += [state.change(name, low, high) for name in names if _differs(state, name, low, high)]
    else:
        first = state.first_supported(range(len(versions)))
        last = state.first_supported(range(len(versions) - 1, -1, -1)) if first is not None else None
        if first is not None and last is not None and first < last:
            names = sorted(set(state.at(first).observables) | set(state.at(last).observables))
            found: dict[tuple[str, str, str], Change] = {}
            probed = -1
            while probed != len(state.order):  # again, while the last pass probed releases the earlier names
                probed = len(state.order)  # did not see (a change and its undoing between equal ends)
                for name in names:
                    for change in state.split(name, first, last):
                        found[change.observable, change.last_before, change.first_after] = change
            changes = list(found.values())
    changes.sort(key=lambda change: (versions.index(change.first_after), change.observable))
    return Bisection(package, mode, tuple(versions), tuple(state.order), tuple(changes), time.perf_counter() - started)


def _differs(state: _Search, name: str, low: int, high: int) -> bool:
    return state.at(low).observables.get(name, "absent") != state.at(high).observables.get(name, "absent")
