"""Comparisons that name their tolerance: token ids exactly, tensors bit-exact or within a stated atol/rtol."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import torch

from equiv_core.arms.steering import GenerationRecord

# Tolerances for logits that went through different but equivalent computations (e.g. cached decode vs a
# full forward pass: different matmul shapes accumulate rounding differently). Token ids are always exact.
LOGITS_TOLERANCE: dict[torch.dtype, tuple[float, float]] = {
    torch.float32: (1e-3, 1e-4),
    torch.bfloat16: (0.5, 5e-2),
    torch.float16: (5e-2, 1e-2),
}


# Rounding differences are a maximum over thousands of logits, which fluctuates between two runs by a small
# factor; a misplaced edit moves logits by orders of magnitude more.
FLOOR_MARGIN = 4.0
# Steered logits larger than unsteered ones round more coarsely, but no more than this factor is granted for it.
MAGNITUDE_CAP = 8.0


def rounding_allowance(floor: float, steered_max: float, unsteered_max: float, dtype: torch.dtype) -> float:
    """How far two computation paths of the same steered run may differ in logits on identical inputs.

    ``floor``: the unsteered model's own difference between the same two paths, measured in the same run (e.g.
    cached generation vs a full forward pass). It is scaled by how much larger the steered logits are (rounding
    grows with magnitude: ``steered_max / unsteered_max``, between 1 and :data:`MAGNITUDE_CAP`) and by
    :data:`FLOOR_MARGIN`; it is never below a few units of the dtype's rounding of the largest logit
    (``torch.finfo(dtype).eps``).
    """
    magnitude = min(MAGNITUDE_CAP, max(1.0, steered_max / unsteered_max)) if unsteered_max > 0 else 1.0
    rounding_unit = torch.finfo(dtype).eps * steered_max
    return FLOOR_MARGIN * max(floor * magnitude, 2 * rounding_unit)


def tensor_sha256(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's bytes (float32, CPU, contiguous): equal hashes mean bit-identical values."""
    data = tensor.detach().to("cpu", torch.float32).contiguous()
    return hashlib.sha256(data.numpy().tobytes()).hexdigest()


@dataclass(frozen=True, slots=True)
class TensorComparison:
    """Bit-exactness, the largest absolute difference, and the verdict under a stated tolerance."""

    bit_identical: bool
    max_abs_diff: float
    within_tolerance: bool
    atol: float
    rtol: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare_tensors(actual: torch.Tensor, expected: torch.Tensor, atol: float, rtol: float) -> TensorComparison:
    """Compare two tensors of the same shape; a shape mismatch is a failed comparison, not an exception."""
    if actual.shape != expected.shape:
        return TensorComparison(False, float("inf"), False, atol, rtol)
    actual32, expected32 = actual.float(), expected.float()
    return TensorComparison(
        bit_identical=bool(torch.equal(actual, expected)),
        max_abs_diff=float((actual32 - expected32).abs().max()) if actual.numel() else 0.0,
        within_tolerance=bool(torch.allclose(actual32, expected32, atol=atol, rtol=rtol)),
        atol=atol,
        rtol=rtol,
    )


def identical_generations(first: GenerationRecord, second: GenerationRecord) -> bool:
    """The same token ids and bit-identical per-step logits (``torch.equal``)."""
    return first.generated_ids == second.generated_ids and torch.equal(first.step_logits, second.step_logits)


def steering_problems(arm: GenerationRecord, reference: GenerationRecord, unsteered: GenerationRecord) -> list[str]:
    """Why a steered arm cannot be trusted, or [] when it agrees with the raw-hook reference and did something.

    An arm whose ids equal the unsteered ids is "steering not applied", never "equivalent": if the reference
    also equals unsteered, the edit is invisible in this output and no equivalence can be shown with it.
    """
    problems = []
    if reference.generated_ids == unsteered.generated_ids:
        problems.append(
            "the edit does not change the output even in the raw-hook reference, so this "
            "comparison cannot tell steering from no steering"
        )
    elif arm.generated_ids == unsteered.generated_ids:
        problems.append(f"{arm.arm}: steering not applied (ids equal the unsteered ids)")
    if arm.generated_ids != reference.generated_ids:
        problems.append(
            f"{arm.arm}: ids {list(arm.generated_ids)} differ from the raw-hook reference "
            f"{list(reference.generated_ids)}"
        )
    return problems
