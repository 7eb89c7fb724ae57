"""The one place that makes runs repeatable: seeds, deterministic kernels and the flags that control them.

Why one module: determinism settings interact (``CUBLAS_WORKSPACE_CONFIG`` must be set before CUDA starts,
TF32 silently changes fp32 matmuls on Ampere+), so they are set together and reported together.
"""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

# cuBLAS needs a fixed workspace for deterministic results; this must be in the environment before the CUDA
# context is created, so :func:`configure_determinism` records whether it was too late.
CUBLAS_WORKSPACE = ":4096:8"


@dataclass(frozen=True, slots=True)
class DeterminismReport:
    """What :func:`configure_determinism` set, recorded with every result."""

    seed: int
    deterministic_algorithms: bool
    cudnn_deterministic: bool
    cudnn_benchmark: bool
    tf32_matmul: bool
    tf32_cudnn: bool
    float32_matmul_precision: str
    cublas_workspace_config: str | None
    cuda_initialized_before: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def configure_determinism(seed: int, *, deterministic: bool = True) -> DeterminismReport:
    """Seed every RNG and, when ``deterministic``, force deterministic kernels with TF32 off.

    ``deterministic=False`` is for timing runs (default kernels); equivalence runs always use ``True``.
    """
    cuda_initialized_before = bool(torch.cuda.is_initialized())  # type: ignore[no-untyped-call]
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cuda.matmul.allow_tf32 = not deterministic
    torch.backends.cudnn.allow_tf32 = not deterministic
    torch.set_float32_matmul_precision("highest" if deterministic else "high")
    return DeterminismReport(
        seed=seed,
        deterministic_algorithms=torch.are_deterministic_algorithms_enabled(),
        cudnn_deterministic=bool(torch.backends.cudnn.deterministic),
        cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
        tf32_matmul=bool(torch.backends.cuda.matmul.allow_tf32),
        tf32_cudnn=bool(torch.backends.cudnn.allow_tf32),
        float32_matmul_precision=torch.get_float32_matmul_precision(),
        cublas_workspace_config=os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        cuda_initialized_before=cuda_initialized_before,
    )
