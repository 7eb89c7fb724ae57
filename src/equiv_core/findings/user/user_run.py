"""Everything ``equiv check`` generates for one piece of user steering, once, shared by the user findings.

In this order: ``unsteered`` (HF ``generate``, no edit), ``hook`` (the intent applied by the independent raw-hook
reference, :func:`equiv_core.arms.reference.spec_hook_generate`), ``user`` (the user's steering, observed by
:class:`equiv_core.observe.observer.BlockObserver`), ``unsteered_after`` (HF ``generate`` again, after the user's
steering returned) and, only when some logits differ without differing ids, ``unsteered_recompute`` (the model's own
rounding noise floor). The reference runs before the user's code so that steering the user leaves behind cannot
reach it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import torch

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.reference import spec_hook_generate
from equiv_core.arms.resolved import ResolvedSpec
from equiv_core.arms.steering import GenerationRecord, SpecGeneration, Touch, records_from_output
from equiv_core.config.catalog import ArmName
from equiv_core.findings.coverage_map import CoverageCheck, intended_touches
from equiv_core.models.inputs import PromptBatch
from equiv_core.observe.hooks import ModelState
from equiv_core.observe.observer import BlockObserver, Change, Observation
from equiv_core.usercode.forms import UserSteering
from equiv_core.usercode.running import UserGeneration, run_user_steering


@dataclass(frozen=True, slots=True)
class PadChange:
    """A hidden state the user's steering changed at a pad column of ``row`` (no token there)."""

    step: int
    layer: int
    column: int
    row: int

    def to_list(self) -> list[int]:
        return [self.step, self.layer, self.column, self.row]


@dataclass(frozen=True, slots=True, eq=False)
class UserRun:
    """The generations of one ``equiv check`` and what the observer saw of the user's.

    ``cached``: whether the user's passes used the KV cache (decode passes of one position); ``coverage`` one
    check per row of the observed touches against the intent; ``left_behind`` what the model held after the user's
    steering returned that it did not before (hooks, swapped modules), in words.
    """

    resolved: ResolvedSpec
    steering: UserSteering
    user: tuple[GenerationRecord, ...]
    observation: Observation
    cached: bool
    coverage: tuple[CoverageCheck, ...]
    pad_changes: tuple[PadChange, ...]
    reference: SpecGeneration
    unsteered: tuple[GenerationRecord, ...]
    after: tuple[GenerationRecord, ...]
    left_behind: tuple[str, ...]
    unsteered_recompute: tuple[GenerationRecord, ...] | None
    decode: Callable[[tuple[int, ...]], str]
    dtype: torch.dtype

    @property
    def batch(self) -> PromptBatch:
        return self.resolved.batch


def uses_cache(observation: Observation) -> bool:
    """Whether the observed passes are cached decoding: every pass of block 0 after the first holds one position.
    (A single pass is taken as cached; what it held is checked against that by the coverage check.)"""
    lengths = [shape.length for shape in observation.passes if shape.layer == 0]
    return all(length == 1 for length in lengths[1:]) if len(lengths) > 1 else True


def _touches(changes: frozenset[Change], batch: PromptBatch) -> tuple[frozenset[Touch], tuple[PadChange, ...]]:
    """Observed changes as row-relative touches, and the ones at pad columns (no position to give them)."""
    touches, pads = set(), []
    for change in changes:
        position = batch.position_of(change.row, change.column)
        if position is None:
            pads.append(PadChange(change.step, change.layer, change.column, change.row))
        else:
            touches.add(Touch(change.step, change.layer, position, change.row))
    return frozenset(touches), tuple(sorted(pads, key=PadChange.to_list))


def _coverage(
    records: tuple[GenerationRecord, ...],
    touches: frozenset[Touch],
    observation: Observation,
    resolved: ResolvedSpec,
    cached: bool,
) -> tuple[CoverageCheck, ...]:
    batch, checks = resolved.batch, []
    for row, record in enumerate(records):
        steps_run = len(record.generated_ids)
        intended = intended_touches(
            resolved.positions[row], resolved.layers, batch.lengths[row], steps_run, cached, row
        )
        touched = frozenset(t for t in touches if t.row == row and t.step < steps_run)
        passes = tuple(shape for shape in observation.passes if shape.layer == 0) if row == 0 else ()
        checks.append(
            CoverageCheck(
                ArmName.USER,
                cached,
                intended,
                touched,
                (),
                passes,
                batch.lengths[row],
                row,
                batch.padded_length,
                steps_run,
            )
        )
    return tuple(checks)


def _records(generation: UserGeneration, resolved: ResolvedSpec) -> tuple[GenerationRecord, ...]:
    batch = resolved.batch
    eos = resolved.eos_ids if resolved.decoding.stop_at_eos else ()
    prompts = tuple(batch.row_ids(row) for row in range(batch.size))
    logits = generation.observation.step_logits  # one per generated token (the observer kept the last ones)
    return records_from_output(ArmName.USER, prompts, batch.padded_length, generation.sequences, logits, eos)


def _needs_floor(user: tuple[GenerationRecord, ...], others: tuple[tuple[GenerationRecord, ...], ...]) -> bool:
    """Some row has the same ids as another generation but logits that are not bit-identical: only then does a
    verdict need the model's own rounding noise."""
    return any(
        mine.generated_ids == theirs.generated_ids and not torch.equal(mine.step_logits, theirs.step_logits)
        for rows in others
        for mine, theirs in zip(user, rows, strict=True)
    )


def run_user(
    context: SteeringContext, resolved: ResolvedSpec, steering: UserSteering, say: Callable[[str], None]
) -> UserRun:
    """Generate unsteered, the reference of the intent, the user's steering (observed) and unsteered again."""
    model, tokenizer, work = context.loaded.model, context.loaded.tokenizer, context.work
    pad = tokenizer.pad_token_id
    say("generating: unsteered (HF generate, no edit) ...")
    unsteered = work.timed(partial(spec_hook_generate, model, pad, resolved, True, steer=False)).rows
    say("generating: the intent with the raw-hook reference (HF generate with the KV cache) ...")
    reference = work.timed(partial(spec_hook_generate, model, pad, resolved, True))
    observer = BlockObserver(model, resolved.batch.input_ids[:1, :2])
    say(f"generating: {steering.target.describe()} ({steering.form} form), observed at every block ...")
    before = ModelState.of(model)
    generation = work.timed(
        partial(
            run_user_steering,
            steering,
            model,
            tokenizer,
            resolved.batch,
            resolved.new_tokens,
            resolved.decoding,
            observer,
        )
    )
    left_behind = tuple(ModelState.of(model).left_behind(before))
    say("generating: unsteered again, after the steering returned ...")
    after = work.timed(partial(spec_hook_generate, model, pad, resolved, True, steer=False)).rows
    after = tuple(replace(record, arm=ArmName.UNSTEERED_AFTER) for record in after)
    observation = generation.observation
    cached = uses_cache(observation)
    if not cached:  # the user's code recomputes every position each step: so must the reference
        say("generating: the intent with the raw-hook reference, without the KV cache ...")
        reference = work.timed(partial(spec_hook_generate, model, pad, resolved, False))
    user = _records(generation, resolved)
    touches, pads = _touches(observation.changes, resolved.batch)
    floor = None
    if _needs_floor(user, (reference.rows, unsteered)):
        say("generating: unsteered without the KV cache (the model's own rounding, for the logits tolerance) ...")
        floor = work.timed(partial(spec_hook_generate, model, pad, resolved, False, steer=False)).rows
    return UserRun(
        resolved=resolved,
        steering=steering,
        user=user,
        observation=observation,
        cached=cached,
        coverage=_coverage(user, touches, observation, resolved, cached),
        pad_changes=pads,
        reference=reference,
        unsteered=unsteered,
        after=after,
        left_behind=left_behind,
        unsteered_recompute=floor,
        decode=context.decode,
        dtype=context.dtype,
    )
