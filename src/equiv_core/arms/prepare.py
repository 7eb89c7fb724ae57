"""One way to get a model ready for work, used by ``equiv run``, ``equiv bench``, the audit cell and the tests:
determinism first (before anything can start CUDA), then the device, the model and its architecture probe."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from equiv_core.arms.context import SteeringContext, build_context
from equiv_core.models.determinism import DeterminismReport, configure_determinism
from equiv_core.models.load import load_model, resolve_device


@dataclass(frozen=True, slots=True, eq=False)
class PreparedRun:
    """A loaded model with its steering context, on ``device``, with the determinism settings in force."""

    context: SteeringContext
    determinism: DeterminismReport
    device: torch.device


def prepare_run(
    model: str,
    device: str | torch.device = "cpu",
    dtype: str = "float32",
    seed: int = 0,
    deterministic: bool = True,
    say: Callable[[str], None] | None = None,
) -> PreparedRun:
    """Configure determinism, resolve the device, load ``model`` and probe its decoder layers.

    Raises UserInputError for an unknown model, dtype or device (one line naming the valid choices).
    """
    report = say or (lambda _message: None)
    determinism = configure_determinism(seed, deterministic=deterministic)  # before anything touches CUDA
    torch_device = device if isinstance(device, torch.device) else resolve_device(device)
    report(f"loading {model} on {torch_device} ({dtype})")
    loaded = load_model(model, torch_device, dtype)
    context = build_context(loaded)
    report(
        f"loaded in {loaded.load_seconds:.1f} s: {context.architecture.num_layers} layers, "
        f"block output is a {context.architecture.block_output_form}, nnsight {context.nnsight.version}"
    )
    return PreparedRun(context, determinism, torch_device)
