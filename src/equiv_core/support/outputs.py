"""Output files written safely: destinations checked before any model work, contents written to a temporary file
in the target directory and renamed into place (a reader never sees half a file, a failed run leaves an existing
file as it was), with the mode a plain write would give (the umask for a new file, the old mode for a replaced
one)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from equiv_core.support.errors import EnvironmentFault, UserInputError


def check_output(value: str | None, flag: str, default: str | None = None) -> Path | None:
    """The path ``value`` names, once it is known that a file can be written there; UserInputError otherwise.

    The check writes and removes a probe file in the target directory, which catches read-only directories and
    pseudo-filesystems (``/proc``) that look writable. ``default`` (a built-in path) may name a directory that
    does not exist yet: it is created.
    """
    if value is None:
        return None
    path = Path(value)
    if path.is_dir():
        raise UserInputError(f"{flag} {value!r} is a directory; give a file path")
    if value == default:
        path.parent.mkdir(parents=True, exist_ok=True)
    if not path.parent.is_dir():
        raise UserInputError(f"{flag} {value!r}: directory {str(path.parent)!r} does not exist")
    if path.exists() and not os.access(path, os.W_OK):
        raise UserInputError(f"{flag} {value!r}: the file exists and is not writable")
    try:
        handle, probe = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise UserInputError(
            f"{flag} {value!r}: cannot write in {str(path.parent)!r} ({error.strerror}); choose a directory you can "
            "write to"
        ) from None
    return path


def _mode_for(path: Path) -> int:
    """The mode a plain ``open(path, "w")`` would leave: the existing file's, or 0o666 less the umask."""
    if path.exists():
        return path.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` when the block ends without error,
    removed otherwise. A failure to write or rename is an EnvironmentFault naming the path."""
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
        os.close(handle)
    except OSError as error:
        raise EnvironmentFault(
            f"cannot write {path}: {error.strerror}; free some space or choose another path"
        ) from None
    staging = Path(temporary)
    try:
        yield staging
        os.chmod(staging, _mode_for(path))
        os.replace(staging, path)
    except OSError as error:
        staging.unlink(missing_ok=True)
        raise EnvironmentFault(
            f"cannot write {path}: {error.strerror} (the previous file, if any, is unchanged); free some space or "
            "choose another path"
        ) from None
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """``payload`` as indented JSON at ``path``, atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as staging:
        staging.write_text(json.dumps(payload, indent=2) + "\n")


def write_text(path: Path, text: str) -> Path:
    """``text`` at ``path``, atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as staging:
        staging.write_text(text)
    return path


def write_with(path: Path, draw: Callable[[Path], object]) -> Path:
    """Let ``draw`` write its file (e.g. a figure) to a temporary path, then move it onto ``path`` atomically."""
    with atomic_path(path) as staging:
        draw(staging)
    return path
