"""Environment provenance: which library versions, device and source revision produced a result."""

from __future__ import annotations

import functools
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_PACKAGES = ("nnsight", "torch", "transformers", "numpy", "tokenizers", "accelerate", "gguf", "mlflow")


def package_version(name: str) -> str | None:
    """Installed version of ``name``, or None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def _git_revision() -> dict[str, Any]:
    """Commit and dirty flag of the checkout this package runs from, when it runs from one (once a process)."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit, "git_dirty": bool(status.strip())}


def version_info() -> dict[str, Any]:
    """Python, platform, library versions and git revision: everything known without importing torch or asking
    a device anything (so it can be recorded before determinism is configured)."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "executable": sys.executable,
    }
    info.update({f"{name}_version": package_version(name) for name in _PACKAGES})
    info.update(_git_revision())
    return info


def environment_info(device: torch.device) -> dict[str, Any]:
    """:func:`version_info` plus the device, CUDA/cuDNN and GPU, as a flat JSON-ready dict recorded with every run."""
    import torch

    cuda = device.type == "cuda"
    return {
        **version_info(),
        "device": str(device),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,  # type: ignore[no-untyped-call]
        "gpu_name": torch.cuda.get_device_name(device) if cuda else None,
        "gpu_memory_gib": round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1) if cuda else None,
        "torch_threads": torch.get_num_threads(),
    }
