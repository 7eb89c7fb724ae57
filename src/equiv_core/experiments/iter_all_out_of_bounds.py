"""Finding 4: intervening at every step sees [n, H] at step 0 and [1, H] after, so index n-1 fails at step 1.

That failure is the proof that generation uses the KV cache: after the prompt pass each step computes only
the newest position. Without the cache every step recomputes all positions and the same index is valid.
"""

from __future__ import annotations

from equiv_core.comparison import record_summary
from equiv_core.context import SteeringContext
from equiv_core.experiments.base import ExperimentConfig, FindingResult, experiment, verdict
from equiv_core.steering import Edit

ID = "iter_all_out_of_bounds"


@experiment(ID, "iter[:] sees [n, H] at step 0 and [1, H] after, so index n-1 fails at step 1")
def iter_all_out_of_bounds(context: SteeringContext, config: ExperimentConfig) -> FindingResult:
    """Edit at n-1 on every step, with the cache (expect IndexError from step 1) and without (expect none)."""
    input_ids = context.encode(config.prompt)
    prompt_length = input_ids.shape[1]
    hidden = context.architecture.hidden_size
    edit = Edit(config.layer, prompt_length - 1)
    if config.max_new_tokens < 2:
        return verdict(ID, config, ["needs at least 2 new tokens: with 1 there is no step 1 to fail at"], "", {})
    if prompt_length < 2:
        return verdict(ID, config, ["needs a prompt of at least 2 tokens: index 0 exists at every step"], "", {})

    cached = context.nnsight.generate(
        input_ids, config.max_new_tokens, edit, "every_step", catch_index_errors=True, arm="iter_all"
    )
    uncaught_error: str | None = None
    try:
        context.nnsight.generate(input_ids, config.max_new_tokens, edit, "every_step", arm="iter_all")
    except IndexError as error:
        # nnsight < 0.8 wraps it (NNsightException, still an IndexError) with a traceback: keep the last line.
        last_line = (str(error).strip().splitlines() or [""])[-1]
        uncaught_error = last_line if last_line.startswith("IndexError") else f"IndexError: {last_line}"
    recomputed = context.nnsight.generate(
        input_ids, config.max_new_tokens, edit, "every_step", use_cache=False, arm="recompute"
    )

    shapes = [list(shape[1:]) for shape in cached.step_shapes]  # drop the batch dimension
    expected_shapes = [[prompt_length, hidden]] + [[1, hidden]] * (config.max_new_tokens - 1)
    failed_steps = [step for step, error in enumerate(cached.step_errors) if error is not None]
    recompute_shapes = [list(shape[1:]) for shape in recomputed.step_shapes]
    problems = []
    if shapes != expected_shapes:
        problems.append(f"shapes per step {shapes}, expected {expected_shapes}")
    if failed_steps != list(range(1, config.max_new_tokens)):
        problems.append(f"index {prompt_length - 1} failed at steps {failed_steps}, expected every step from 1")
    if uncaught_error is None:
        problems.append("the uncaught edit at every step raised no IndexError")
    if any(error is not None for error in recomputed.step_errors):
        problems.append("without the cache the same index also failed, so the failure is not the cache's doing")
    evidence = {
        "layer": config.layer,
        "position": edit.position,
        "shapes_per_step": shapes,
        "expected_shapes": expected_shapes,
        "failed_steps": failed_steps,
        "first_error": next((error for error in cached.step_errors if error is not None), None),
        "uncaught_error": uncaught_error,
        "recompute_shapes_per_step": recompute_shapes,
        "recompute": record_summary(recomputed, context.decode),
    }
    success = (
        f"shape {shapes[0]} at step 0, {shapes[1]} after; index {prompt_length - 1} fails from step 1 "
        f"({uncaught_error}); without the cache it is valid at every step"
    )
    return verdict(ID, config, problems, success, evidence)
