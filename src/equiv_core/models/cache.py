"""The cache of converted models: complete or absent, checked on every load, rebuilt once when it is not right.

A conversion is written into a temporary directory beside the target and renamed into place only when complete,
with a manifest holding each file's size and content hash and the hash of the source it came from (the habit of
pip's and Hugging Face's caches: content hashes, a temporary name, then a rename). Every load checks the manifest:
XXH3-128 (xxHash, a well-kept fast non-cryptographic hash) reads the default model's 538 MB in about 0.1 s on a
warm page cache. A cache that is partial, truncated, bit-flipped or made from another source is rebuilt once, with
one line saying so; a cache directory that cannot be written makes the caller convert in memory instead.
"""

from __future__ import annotations

import errno
import json
import mmap
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import filelock
import xxhash

from equiv_core.support.errors import EnvironmentFault

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1


@dataclass(frozen=True, slots=True)
class FileDigest:
    """A file's size in bytes and its XXH3-128 content hash (hex)."""

    size: int
    xxh3_128: str


def digest(path: Path) -> FileDigest:
    """The size and XXH3-128 hash of ``path``, read through a memory map."""
    size = path.stat().st_size
    if size == 0:
        return FileDigest(0, xxhash.xxh3_128_hexdigest(b""))
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        return FileDigest(size, xxhash.xxh3_128_hexdigest(mapped))


def _files(directory: Path) -> list[Path]:
    return sorted(path for path in directory.iterdir() if path.is_file() and path.name != MANIFEST)


def write_manifest(directory: Path, source: Path) -> None:
    """Record every file of ``directory`` and the ``source`` it was converted from."""
    manifest = {
        "format": MANIFEST_FORMAT,
        "source": {"name": source.name, **_as_dict(digest(source))},
        "files": {path.name: _as_dict(digest(path)) for path in _files(directory)},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _as_dict(file_digest: FileDigest) -> dict[str, int | str]:
    return {"size": file_digest.size, "xxh3_128": file_digest.xxh3_128}


def problem_with(directory: Path, source: Path) -> str:
    """Why ``directory`` is not a complete, intact conversion of ``source``, in a few words; '' when it is."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        return f"no {MANIFEST}: an interrupted or older conversion"
    except (OSError, ValueError):
        return f"{MANIFEST} is unreadable"
    if manifest.get("format") != MANIFEST_FORMAT:
        return f"{MANIFEST} has format {manifest.get('format')!r}, expected {MANIFEST_FORMAT}"
    expected_source = manifest.get("source", {})
    if expected_source.get("xxh3_128") != digest(source).xxh3_128:
        return f"it was converted from another {source.name} (the source changed)"
    for name, expected in manifest.get("files", {}).items():
        path = directory / name
        if not path.is_file():
            return f"{name} is missing"
        actual = digest(path)
        if actual.size != expected.get("size"):
            return f"{name} has {actual.size} bytes, expected {expected.get('size')} (truncated or partial)"
        if actual.xxh3_128 != expected.get("xxh3_128"):
            return f"{name} does not match its recorded content hash (corrupted)"
    return ""


def _discard(directory: Path) -> None:
    """Move a bad cache entry aside, then delete it (a rename first, so no half-deleted entry looks usable)."""
    aside = directory.with_name(f".discard-{directory.name}-{time.time_ns()}")
    directory.rename(aside)
    shutil.rmtree(aside, ignore_errors=True)


def ensure_converted(
    target: Path, source: Path, convert: Callable[[Path], None], say: Callable[[str], None]
) -> Path | None:
    """``target`` holding a checked conversion of ``source``: used as it is when intact, else (re)built once by
    ``convert(directory)``. None when the cache directory cannot be written (the caller converts in memory).

    Raises EnvironmentFault when the disk fails during a rebuild, or the rebuilt entry fails its own check.
    """
    if target.is_dir() and not problem_with(target, source):
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(target.parent / f".{target.name}.lock"))
        lock.acquire(timeout=1800)
    except OSError:
        return None
    try:
        problem = problem_with(target, source) if target.exists() else "absent"
        if not problem:  # another process converted it while this one waited
            return target
        if problem != "absent":
            say(f"the cached conversion at {target} is unusable ({problem}); rebuilding it (about 20 s)")
            try:
                _discard(target)
            except OSError:
                return None
        return _build(target, source, convert)
    finally:
        lock.release()


def _build(target: Path, source: Path, convert: Callable[[Path], None]) -> Path | None:
    try:
        staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    except OSError:
        return None
    try:
        convert(staging)
        write_manifest(staging, source)
        staging.rename(target)
    except OSError as error:
        if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return None
        raise EnvironmentFault(
            f"cannot write the model cache in {target.parent}: {error.strerror or error} (free space there, or set "
            "EQUIV_CACHE_DIR to another directory)"
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    problem = problem_with(target, source)
    if problem:
        raise EnvironmentFault(
            f"the rebuilt model cache at {target} fails its own check ({problem}); the disk may be failing (set "
            "EQUIV_CACHE_DIR to another directory)"
        )
    return target
