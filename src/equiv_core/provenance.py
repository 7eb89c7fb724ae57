"""Environment provenance: which library versions, device and source revision produced a result."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

_PACKAGES = ("nnsight", "torch", "transformers", "numpy", "tokenizers", "accelerate", "gguf", "mlflow")


def package_version(name: str) -> str | None:
    """Installed version of ``name``, or None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_revision() -> dict[str, Any]:
    """Commit and dirty flag of the checkout this package runs from, when it runs from one."""
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


def environment_info(device: torch.device) -> dict[str, Any]:
    """Versions, device and revision, as a flat JSON-ready dict recorded with every run."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "executable": sys.executable,
        "device": str(device),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,  # type: ignore[no-untyped-call]
        "gpu_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "gpu_memory_gib": (
            round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1) if device.type == "cuda" else None
        ),
        "torch_threads": torch.get_num_threads(),
    }
    info.update({f"{name}_version": package_version(name) for name in _PACKAGES})
    info.update(_git_revision())
    return info
