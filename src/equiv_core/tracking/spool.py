"""A local copy of what a command logged to MLflow, written to disk when the tracking store fails mid-run and
uploaded later with ``equiv runs --upload DIR``.

Every run a :class:`~equiv_core.tracking.store.Tracker` opens is journaled in memory (params, metrics, tags,
artifacts; the content of logged files is kept in memory) while it is also sent to the store. When the store
stops answering, the command finishes its work, prints its report, writes its JSON, and spools the journal:
``<spool root>/<UTC time>-<pid>/journal.json`` plus ``files/``, written into a temporary directory and renamed
(never half-written). Uploading replays the journal into a store as new runs with the same names, parents,
params, metrics, tags, artifacts and final status.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from equiv_core.support.errors import UserInputError

JOURNAL = "journal.json"
UPLOADED = "uploaded.json"
JOURNAL_FORMAT = 1
LogKind = Literal["batch", "dict", "text", "file", "table"]


@dataclass
class SpooledRun:
    """One run as it was opened: ``key`` is local (``r0``, ``r1``, ...); ``remote_id`` is the id the store gave,
    "" when the store had already failed; ``status`` is the MLflow status it ended with."""

    key: str
    name: str
    parent: str | None
    tags: dict[str, str]
    remote_id: str = ""
    status: str = "RUNNING"


@dataclass(frozen=True, slots=True)
class SpooledLog:
    """One logging call. ``batch``: params / metrics (logged at ``stamp``, ms since the epoch) / tags.
    ``dict`` / ``text`` / ``table``: ``content`` saved as the artifact ``artifact``. ``file``: the copy
    ``files/<file>`` logged under the artifact directory ``artifact`` ("" for the root)."""

    run: str
    kind: LogKind
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    stamp: int = 0
    artifact: str = ""
    content: Any = None
    file: str = ""


class Journal:
    """The runs and logging calls of one process, kept until the command ends."""

    def __init__(self) -> None:
        self.runs: list[SpooledRun] = []
        self.logs: list[SpooledLog] = []
        self._files: dict[str, bytes] = {}

    def open_run(self, name: str, parent: str | None, tags: dict[str, str], remote_id: str) -> SpooledRun:
        run = SpooledRun(f"r{len(self.runs)}", name, parent, dict(tags), remote_id)
        self.runs.append(run)
        return run

    def add(self, log: SpooledLog) -> None:
        self.logs.append(log)

    def keep_file(self, path: Path) -> str:
        """Keep the content of ``path`` (often a temporary file: plots, small attachments); the copy's name."""
        name = f"{len(self.logs)}-{path.name}"
        self._files[name] = path.read_bytes()
        return name

    def discard(self) -> None:
        """Forget the kept files (the store has everything)."""
        self._files.clear()

    def spool(self, root: Path, uri: str, experiment: str, reason: str) -> Path:
        """Write the journal under ``root`` (created if needed), atomically; the directory written."""
        created = not root.exists()
        root.mkdir(parents=True, exist_ok=True)
        try:
            staging = Path(tempfile.mkdtemp(prefix=".spool-", dir=root))
        except BaseException:
            if created:  # leave no empty spool/ behind
                shutil.rmtree(root, ignore_errors=True)
            raise
        try:
            files = staging / "files"
            files.mkdir()
            for name, content in self._files.items():
                (files / name).write_bytes(content)
            document = {
                "format": JOURNAL_FORMAT,
                "tracking_uri": uri,
                "experiment": experiment,
                "failure": reason,
                "spooled": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "runs": [asdict(run) for run in self.runs],
                "logs": [asdict(log) for log in self.logs],
            }
            (staging / JOURNAL).write_text(json.dumps(document, indent=1) + "\n")
            target = root / f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}"
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if created:
                shutil.rmtree(root, ignore_errors=True)
            raise
        self.discard()
        return target


@dataclass(frozen=True, slots=True)
class Spooled:
    """A journal read back from disk."""

    directory: Path
    tracking_uri: str
    experiment: str
    failure: str
    runs: tuple[SpooledRun, ...]
    logs: tuple[SpooledLog, ...]


def read_spool(directory: Path) -> Spooled:
    """The journal in ``directory``; UserInputError when it is not one, or was uploaded already."""
    if (directory / UPLOADED).exists():
        uploaded = json.loads((directory / UPLOADED).read_text())
        raise UserInputError(f"{directory} was uploaded already, as run(s) {', '.join(uploaded['run_ids'])}")
    try:
        document = json.loads((directory / JOURNAL).read_text())
    except (OSError, ValueError):
        raise UserInputError(f"{str(directory)!r} is not a spooled run directory (no readable {JOURNAL})") from None
    if document.get("format") != JOURNAL_FORMAT:
        raise UserInputError(f"{directory / JOURNAL} has format {document.get('format')!r}, expected {JOURNAL_FORMAT}")
    return Spooled(
        directory,
        document["tracking_uri"],
        document["experiment"],
        document["failure"],
        tuple(SpooledRun(**run) for run in document["runs"]),
        tuple(SpooledLog(**log) for log in document["logs"]),
    )


def mark_uploaded(spooled: Spooled, run_ids: list[str], uri: str) -> None:
    """Record where the journal went, so a second upload is refused."""
    (spooled.directory / UPLOADED).write_text(json.dumps({"tracking_uri": uri, "run_ids": run_ids}) + "\n")
