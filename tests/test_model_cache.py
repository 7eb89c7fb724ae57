"""The converted-model cache: used when intact, rebuilt once when partial, truncated, corrupted or stale, and
never left half-written (models.cache.ensure_converted with a stand-in conversion that writes two small files)."""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from equiv_core.models.cache import MANIFEST, ensure_converted, problem_with
from equiv_core.support.errors import EnvironmentFault

pytestmark = pytest.mark.faults

WEIGHTS = bytes(range(256)) * 64  # 16 KiB


class Conversion:
    """Writes ``model.safetensors`` and ``config.json`` into the staging directory; counts its calls."""

    def __init__(self, fail_with: OSError | None = None) -> None:
        self.calls = 0
        self.fail_with = fail_with

    def __call__(self, directory: Path) -> None:
        self.calls += 1
        (directory / "model.safetensors").write_bytes(WEIGHTS)
        if self.fail_with is not None:
            raise self.fail_with
        (directory / "config.json").write_text('{"model_type": "llama"}')


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + bytes(100))
    return path


@pytest.fixture
def target(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "smollm2"


def _build(target: Path, source: Path) -> list[str]:
    said: list[str] = []
    assert ensure_converted(target, source, Conversion(), said.append) == target
    return said


def _leftovers(target: Path) -> list[str]:
    return sorted(p.name for p in target.parent.iterdir() if p.name != target.name and not p.name.endswith(".lock"))


def test_a_fresh_conversion_is_complete_and_passes_its_check(target: Path, source: Path) -> None:
    assert _build(target, source) == []
    assert problem_with(target, source) == ""
    manifest = json.loads((target / MANIFEST).read_text())
    assert set(manifest["files"]) == {"model.safetensors", "config.json"}
    assert manifest["source"]["size"] == source.stat().st_size
    assert _leftovers(target) == []


def test_an_intact_cache_is_used_without_converting_again(target: Path, source: Path) -> None:
    _build(target, source)
    conversion = Conversion()
    assert ensure_converted(target, source, conversion, print) == target
    assert conversion.calls == 0


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda d: (d / "model.safetensors").write_bytes(WEIGHTS[:1000]), "truncated or partial"),
        (lambda d: (d / "config.json").unlink(), "config.json is missing"),
        (lambda d: (d / MANIFEST).unlink(), "interrupted or older conversion"),
        (lambda d: (d / MANIFEST).write_text("{not json"), "unreadable"),
    ],
    ids=["truncated", "partial", "no-manifest", "bad-manifest"],
)
def test_a_damaged_cache_is_rebuilt_once_with_one_line(
    target: Path, source: Path, damage: Callable[[Path], object], reason: str
) -> None:
    _build(target, source)
    damage(target)
    said: list[str] = []
    conversion = Conversion()
    assert ensure_converted(target, source, conversion, said.append) == target
    assert conversion.calls == 1
    assert len(said) == 1 and reason in said[0] and "rebuilding" in said[0]
    assert problem_with(target, source) == ""
    assert _leftovers(target) == []


def test_one_flipped_byte_is_caught_and_rebuilt(target: Path, source: Path) -> None:
    _build(target, source)
    weights = target / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[5000] ^= 0x01
    weights.write_bytes(bytes(data))
    assert "does not match its recorded content hash" in problem_with(target, source)
    said: list[str] = []
    assert ensure_converted(target, source, Conversion(), said.append) == target
    assert len(said) == 1 and "corrupted" in said[0]
    assert weights.read_bytes() == WEIGHTS


def test_a_changed_source_makes_the_cache_stale(target: Path, source: Path) -> None:
    _build(target, source)
    source.write_bytes(b"GGUF" + bytes(99) + b"\x01")
    assert "source changed" in problem_with(target, source)


def test_a_full_disk_during_conversion_is_an_environment_fault_leaving_nothing(target: Path, source: Path) -> None:
    conversion = Conversion(fail_with=OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(EnvironmentFault, match="No space left on device.*EQUIV_CACHE_DIR"):
        ensure_converted(target, source, conversion, print)
    assert not target.exists()
    assert _leftovers(target) == []


def test_a_cache_directory_that_refuses_writes_means_convert_in_memory(target: Path, source: Path) -> None:
    conversion = Conversion(fail_with=PermissionError(errno.EACCES, "Permission denied"))
    assert ensure_converted(target, source, conversion, print) is None
    assert not target.exists()


def test_a_cache_directory_that_cannot_be_created_means_convert_in_memory(source: Path) -> None:
    conversion = Conversion()
    assert ensure_converted(Path("/sys/equiv-bench-test/smollm2"), source, conversion, print) is None
    assert conversion.calls == 0


def test_a_damaged_cache_on_a_read_only_filesystem_means_convert_in_memory(
    target: Path, source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _build(target, source)
    (target / "model.safetensors").write_bytes(WEIGHTS[:10])

    def read_only(*_args: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "rename", read_only)
    said: list[str] = []
    assert ensure_converted(target, source, Conversion(), said.append) is None
    assert len(said) == 1 and "truncated or partial" in said[0]
    assert (target / "model.safetensors").read_bytes() == WEIGHTS[:10]  # left as found
