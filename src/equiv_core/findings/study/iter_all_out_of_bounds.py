"""Finding 4: intervening at every step sees [n, H] at step 0 and [1, H] after, so index n-1 fails at step 1.

That failure is the proof that generation uses the KV cache: after the prompt pass each step computes only
the newest position. Without the cache every step recomputes all positions and the same index is valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.steering import Edit
from equiv_core.config.catalog import ArmName
from equiv_core.findings.finding import (
    Evidence,
    ExperimentConfig,
    FindingResult,
    GenerationSummary,
    experiment,
    not_applicable,
    verdict,
)

ID = "iter_all_out_of_bounds"


@dataclass(frozen=True, slots=True)
class IterAllEvidence(Evidence):
    layer: int
    position: int
    shapes_per_step: tuple[tuple[int, int], ...]  # [seq, hidden] seen at each step, with the cache
    expected_shapes: tuple[tuple[int, int], ...]
    failed_steps: tuple[int, ...]
    first_error: str | None
    uncaught_error: str | None
    recompute_shapes_per_step: tuple[tuple[int, int], ...]
    recompute: GenerationSummary

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "position": self.position,
            "shapes_per_step": [list(shape) for shape in self.shapes_per_step],
            "expected_shapes": [list(shape) for shape in self.expected_shapes],
            "failed_steps": list(self.failed_steps),
            "first_error": self.first_error,
            "uncaught_error": self.uncaught_error,
            "recompute_shapes_per_step": [list(shape) for shape in self.recompute_shapes_per_step],
            "recompute": self.recompute.to_dict(),
        }

    def lines(self) -> list[str]:
        def shapes(values: tuple[tuple[int, int], ...]) -> str:
            return str([list(shape) for shape in values])

        return [
            f"shapes per step with cache:    {shapes(self.shapes_per_step)}",
            f"index {self.position} failed at steps {list(self.failed_steps)}: {self.first_error}",
            f"shapes per step without cache: {shapes(self.recompute_shapes_per_step)} (no error)",
        ]

    def generations(self) -> dict[str, GenerationSummary]:
        return {"recompute": self.recompute}


def _without_batch(shapes: tuple[tuple[int, ...], ...]) -> tuple[tuple[int, int], ...]:
    return tuple((int(shape[1]), int(shape[2])) for shape in shapes)


@experiment(ID, "iter[:] sees [n, H] at step 0 and [1, H] after, so index n-1 fails at step 1")
def iter_all_out_of_bounds(context: SteeringContext, config: ExperimentConfig) -> FindingResult:
    """Edit at n-1 on every step, with the cache (expect IndexError from step 1) and without (expect none)."""
    input_ids = context.encode(config.prompt)
    prompt_length = input_ids.shape[1]
    hidden = context.architecture.hidden_size
    if config.max_new_tokens < 2:
        return not_applicable(ID, config, "needs at least 2 new tokens: with 1 there is no step 1 to fail at")
    if prompt_length < 2:
        return not_applicable(ID, config, "needs a prompt of at least 2 tokens: index 0 exists at every step")
    edit = Edit(config.layer, prompt_length - 1)

    cached = context.nnsight.generate(
        input_ids, config.max_new_tokens, edit, "every_step", catch_index_errors=True, arm=ArmName.ITER_ALL
    )
    uncaught_error: str | None = None
    try:
        context.nnsight.generate(input_ids, config.max_new_tokens, edit, "every_step", arm=ArmName.ITER_ALL)
    except IndexError as error:
        # nnsight < 0.8 wraps it (NNsightException, still an IndexError) with a traceback: keep the last line.
        last_line = (str(error).strip().splitlines() or [""])[-1]
        uncaught_error = last_line if last_line.startswith("IndexError") else f"IndexError: {last_line}"
    recomputed = context.nnsight.generate(
        input_ids, config.max_new_tokens, edit, "every_step", use_cache=False, arm=ArmName.RECOMPUTE
    )

    shapes = _without_batch(cached.step_shapes)
    expected_shapes = ((prompt_length, hidden),) + ((1, hidden),) * (config.max_new_tokens - 1)
    failed_steps = tuple(step for step, error in enumerate(cached.step_errors) if error is not None)
    problems = []
    if shapes != expected_shapes:
        problems.append(f"shapes per step {[list(s) for s in shapes]}, expected {[list(s) for s in expected_shapes]}")
    if failed_steps != tuple(range(1, config.max_new_tokens)):
        problems.append(f"index {prompt_length - 1} failed at steps {list(failed_steps)}, expected every step from 1")
    if uncaught_error is None:
        problems.append("the uncaught edit at every step raised no IndexError")
    if any(error is not None for error in recomputed.step_errors):
        problems.append("without the cache the same index also failed, so the failure is not the cache's doing")
    evidence = IterAllEvidence(
        config.layer,
        edit.position,
        shapes,
        expected_shapes,
        failed_steps,
        next((error for error in cached.step_errors if error is not None), None),
        uncaught_error,
        _without_batch(recomputed.step_shapes),
        GenerationSummary.of(recomputed, context.decode),
    )
    success = (
        f"shape {list(shapes[0])} at step 0, {list(shapes[1])} after; index {prompt_length - 1} fails from step 1 "
        f"({uncaught_error}); without the cache it is valid at every step"
    )
    return verdict(ID, config, problems, success, evidence)
