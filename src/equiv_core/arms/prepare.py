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
    attn_implementation: str | None = None,
) -> PreparedRun:
    """Configure determinism, resolve the device, load ``model`` (with the attention kernel ``attn_implementation``;
    None: the model's own) and probe its decoder layers.

    Raises UserInputError for an unknown model, dtype, device or attention kernel (one line naming the valid
    choices).
    """
    report = say or (lambda _message: None)
    determinism = configure_determinism(seed, deterministic=deterministic)  # before anything touches CUDA
    torch_device = device if isinstance(device, torch.device) else resolve_device(device)
    report(f"loading {model} on {torch_device} ({dtype})")
    loaded = load_model(model, torch_device, dtype, attn_implementation)
    context = build_context(loaded)
    architecture = context.architecture
    report(
        f"loaded in {loaded.load_seconds:.1f} s: {architecture.num_layers} layers, block output is a "
        f"{architecture.block_output_form}, attention {architecture.attn_implementation or 'unset'}, "
        f"nnsight {context.nnsight.version}"
    )
    return PreparedRun(context, determinism, torch_device)
