"""Environment provenance: which library versions, device and source revision produced a result."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# Variables that set the CPU thread pools torch's kernels use (OpenMP, MKL); the reduction order of a matmul,
# and so its last bits, can depend on the thread count (https://pytorch.org/docs/stable/notes/randomness.html).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
_PACKAGES = ("nnsight", "torch", "transformers", "numpy", "tokenizers", "accelerate", "gguf", "mlflow", "peft")


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


@dataclass(frozen=True, slots=True)
class Versions:
    """What is known without importing torch or asking a device anything (so it can be recorded before
    determinism is configured): Python, platform, interpreter, library versions (None: not installed), git
    revision of the checkout (None: not run from one; ``git_dirty``: tracked files modified)."""

    python: str
    platform: str
    executable: str
    packages: tuple[tuple[str, str | None], ...]  # (distribution name, version), in _PACKAGES order
    git_commit: str | None
    git_dirty: bool | None

    def version(self, package: str) -> str | None:
        return dict(self.packages).get(package)

    def to_dict(self) -> dict[str, Any]:
        """Flat, as recorded since the first release: ``<package>_version`` keys between platform and git."""
        return {
            "python": self.python,
            "platform": self.platform,
            "executable": self.executable,
            **{f"{name}_version": version for name, version in self.packages},
            "git_commit": self.git_commit,
            "git_dirty": self.git_dirty,
        }


def version_info() -> Versions:
    """:class:`Versions` of this process."""
    revision = _git_revision()
    return Versions(
        python=platform.python_version(),
        platform=platform.platform(),
        executable=sys.executable,
        packages=tuple((name, package_version(name)) for name in _PACKAGES),
        git_commit=revision["git_commit"],
        git_dirty=revision["git_dirty"],
    )


@functools.cache
def cpu_model() -> str | None:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, :func:`platform.processor` elsewhere); None if unknown."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or None


@dataclass(frozen=True, slots=True)
class Compute:
    """What can change a CPU result's last bits between machines or settings of one machine: torch's intra-op and
    inter-op thread counts, the OpenMP / MKL thread variables (None when unset), the CPU model and the instruction
    set torch's CPU kernels dispatch to (``torch.backends.cpu.get_cpu_capability()``, e.g. ``AVX2``, ``AVX512``)."""

    torch_threads: int
    torch_interop_threads: int
    omp_num_threads: str | None
    mkl_num_threads: str | None
    cpu_model: str | None
    cpu_capability: str
    cpu_count: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compute_info() -> Compute:
    """:class:`Compute` of this process."""
    import torch

    threads = {variable.lower(): os.environ.get(variable) for variable in THREAD_VARIABLES}
    return Compute(
        torch_threads=torch.get_num_threads(),
        torch_interop_threads=torch.get_num_interop_threads(),
        omp_num_threads=threads["omp_num_threads"],
        mkl_num_threads=threads["mkl_num_threads"],
        cpu_model=cpu_model(),
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        cpu_count=os.cpu_count(),
    )


@dataclass(frozen=True, slots=True)
class Environment:
    """Everything recorded with every run about where it ran: :class:`Versions`, the device (``cuda``: CUDA
    version, ``cudnn``: cuDNN version number, ``gpu_memory_gib``: total GPU memory in GiB; None on CPU), and
    :class:`Compute`."""

    versions: Versions
    device: str
    cuda: str | None
    cudnn: int | None
    gpu_name: str | None
    gpu_memory_gib: float | None
    compute: Compute

    def to_dict(self) -> dict[str, Any]:
        """Flat and JSON-ready, keys in the order every run's JSON has had them."""
        return {
            **self.versions.to_dict(),
            "device": self.device,
            "cuda": self.cuda,
            "cudnn": self.cudnn,
            "gpu_name": self.gpu_name,
            "gpu_memory_gib": self.gpu_memory_gib,
            **self.compute.to_dict(),
        }


def environment_info(device: torch.device) -> Environment:
    """:class:`Environment` of this process on ``device``."""
    import torch

    cuda = device.type == "cuda"
    return Environment(
        versions=version_info(),
        device=str(device),
        cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,  # type: ignore[no-untyped-call]
        gpu_name=torch.cuda.get_device_name(device) if cuda else None,
        gpu_memory_gib=round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1) if cuda else None,
        compute=compute_info(),
    )
