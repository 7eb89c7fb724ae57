"""Everything ``equiv check`` generates for one piece of user steering, once, shared by the user findings.

In this order: ``unsteered`` (HF ``generate``, no edit) and ``hook`` (the intent applied by the independent raw-hook
reference, :func:`equiv_core.arms.reference.spec_hook_generate`, with the KV cache) before the user's code, so that
steering it leaves behind cannot reach them; ``user`` (the user's steering, observed by
:class:`equiv_core.observe.observer.BlockObserver`); ``unsteered_after`` (HF ``generate`` again, after the user's
steering returned). Two generations can only come after it: the reference again without the KV cache, when the
user's code recomputes every position each step, and ``unsteered_recompute`` (the model's own rounding noise floor),
when some logits differ without differing ids or the intent changes nothing. Where the user's steering left anything
behind (``tainted``), the floor is not measured (every comparison is then bit for bit) and a reference made after it
is reported as untrusted. Each finding asks only for the generations it reads (:class:`Phase`).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import TypeVar

import torch

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.model_work import ModelWork
from equiv_core.arms.reference import spec_hook_generate
from equiv_core.arms.resolved import ResolvedSpec
from equiv_core.arms.steering import GenerationRecord, SpecGeneration, records_from_output
from equiv_core.config.catalog import ArmName
from equiv_core.findings.comparison import identical_generations
from equiv_core.findings.coverage_map import CoverageCheck, intended_touches
from equiv_core.models.inputs import PromptBatch
from equiv_core.observe.hooks import ModelState
from equiv_core.observe.observer import BlockObserver, Observation
from equiv_core.observe.touches import ObservedTouches, observed_touches, unobservable
from equiv_core.usercode.forms import UserSteering
from equiv_core.usercode.running import UserGeneration, run_user_steering


@dataclass(frozen=True, slots=True)
class CheckCost:
    """Where one check's model work went, in seconds, and the observer's memory (bytes it kept until the replay).
    ``user_s`` is the user's own generation as observed; the ratio of the whole to it is what a check costs over
    running the steering alone (the observer's hooks make ``user_s`` itself a little slower than a bare run)."""

    unsteered_s: float
    reference_s: float
    user_s: float
    replay_s: float
    after_s: float
    floor_s: float  # 0: the noise floor was not needed
    observer_bytes: int

    @property
    def total_s(self) -> float:
        return self.unsteered_s + self.reference_s + self.user_s + self.replay_s + self.after_s + self.floor_s

    def render(self) -> str:
        parts = (
            ("unsteered", self.unsteered_s),
            ("reference", self.reference_s),
            ("user (observed)", self.user_s),
            ("replay", self.replay_s),
            ("unsteered after", self.after_s),
            ("noise floor", self.floor_s),
        )
        shown = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in parts if seconds or name == "replay")
        return (
            f"check cost: {self.total_s:.2f} s of model work = {shown}; {self.total_s / self.user_s:.1f}x the user's "
            f"generation; the observer held {self.observer_bytes / 2**20:.1f} MiB until the replay"
        )

    def to_dict(self) -> dict[str, float | int]:
        return {
            "unsteered_s": self.unsteered_s,
            "reference_s": self.reference_s,
            "user_s": self.user_s,
            "replay_s": self.replay_s,
            "after_s": self.after_s,
            "floor_s": self.floor_s,
            "total_s": self.total_s,
            "observer_bytes": self.observer_bytes,
        }


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
    reference: SpecGeneration | None  # None, or () for the others: not generated (no finding asked for it)
    unsteered: tuple[GenerationRecord, ...]
    after: tuple[GenerationRecord, ...]
    left_behind: tuple[str, ...]
    unsteered_recompute: tuple[GenerationRecord, ...] | None
    decode: Callable[[tuple[int, ...]], str]
    dtype: torch.dtype
    cost: CheckCost | None = None  # timings: kept out of every finding's evidence (the fingerprint is timing-free)
    tainted: str = ""  # why generations made after the user's steering are not clean ('' when they are)

    @property
    def batch(self) -> PromptBatch:
        return self.resolved.batch


def uses_cache(observation: Observation) -> bool:
    """Whether the observed passes are cached decoding: every pass of block 0 after the first holds one position.
    (A single pass is taken as cached; what it held is checked against that by the coverage check.)"""
    lengths = [shape.length for shape in observation.passes if shape.layer == 0]
    return all(length == 1 for length in lengths[1:]) if len(lengths) > 1 else True


def _coverage(
    records: tuple[GenerationRecord, ...],
    observed: ObservedTouches,
    observation: Observation,
    observer: BlockObserver,
    resolved: ResolvedSpec,
    cached: bool,
) -> tuple[CoverageCheck, ...]:
    batch, checks = resolved.batch, []
    for row, record in enumerate(records):
        steps_run = len(record.generated_ids)
        intended = intended_touches(
            resolved.positions[row], resolved.layers, batch.lengths[row], steps_run, cached, row
        )
        mine = observed.row(row, steps_run)
        # intended edits that would write the value already there: nothing to see, and nothing to miss
        invisible = unobservable(intended - mine.touches, batch, observer, resolved.leaves_unchanged)
        # the passes of the intended layers (their lengths are checked against the KV cache's staircase)
        passes = tuple(shape for shape in observation.passes if shape.layer in resolved.layers) if row == 0 else ()
        checks.append(
            CoverageCheck(
                ArmName.USER,
                cached,
                intended,
                mine.touches | invisible,
                (),
                passes,
                batch.lengths[row],
                row,
                batch.padded_length,
                steps_run,
                pads=mine.pads,
                unobservable=invisible,
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
    verdict need the model's own rounding noise (``others``: each generation's rows, () where not generated)."""
    return any(
        mine.generated_ids == theirs.generated_ids and not identical_generations(mine, theirs)
        for rows in others
        for mine, theirs in zip(user, rows, strict=False)
    )


class Phase(enum.StrEnum):
    """A generation besides the user's own that a user finding may need (the check makes only those asked for)."""

    UNSTEERED = "unsteered"
    REFERENCE = "reference"
    AFTER = "unsteered_after"


def _tainted(
    left_behind: tuple[str, ...], after: tuple[GenerationRecord, ...], unsteered: tuple[GenerationRecord, ...]
) -> str:
    """Why a generation made after the user's steering returned would not be clean, or '': something was left
    behind, or the plain generation after it differs from the one before it."""
    if left_behind:
        return f"the steering left state behind: {left_behind[0]}"
    changed = [
        row
        for row, (later, earlier) in enumerate(zip(after, unsteered, strict=False))
        if not identical_generations(later, earlier)
    ]
    return f"a plain generation after the steering differs from the one before it (rows {changed})" if changed else ""


def run_user(
    context: SteeringContext,
    resolved: ResolvedSpec,
    steering: UserSteering,
    say: Callable[[str], None],
    phases: frozenset[Phase] = frozenset(Phase),
) -> UserRun:
    """Generate what ``phases`` ask for around the user's steering (observed): unsteered and the reference of the
    intent before it, unsteered again after it; the noise floor only where a comparison needs it."""
    model, tokenizer = context.loaded.model, context.loaded.tokenizer
    pad = tokenizer.pad_token_id
    clock = _Clock(context.work)

    def generate(phase: str, cached: bool, steer: bool) -> SpecGeneration:
        return clock.timed(phase, partial(spec_hook_generate, model, pad, resolved, cached, steer=steer))

    unsteered: tuple[GenerationRecord, ...] = ()
    reference = None
    if Phase.UNSTEERED in phases:
        say("generating: unsteered (HF generate, no edit) ...")
        unsteered = generate("unsteered", True, False).rows
    if Phase.REFERENCE in phases:
        say("generating: the intent with the raw-hook reference (HF generate with the KV cache) ...")
        reference = generate("reference", True, True)
    observer = BlockObserver(model, resolved.batch.input_ids[:1, :2])
    say(f"generating: {steering.target.describe()} ({steering.form} form), observed at every block ...")
    before = ModelState.of(model)
    batch, new_tokens, decoding = resolved.batch, resolved.new_tokens, resolved.decoding
    generation = clock.timed(
        "user", partial(run_user_steering, steering, model, tokenizer, batch, new_tokens, decoding, observer)
    )
    left_behind = tuple(ModelState.of(model).left_behind(before))
    after: tuple[GenerationRecord, ...] = ()
    if Phase.AFTER in phases:
        say("generating: unsteered again, after the steering returned ...")
        after = tuple(replace(row, arm=ArmName.UNSTEERED_AFTER) for row in generate("after", True, False).rows)
    observation = generation.observation
    cached = uses_cache(observation)
    tainted = _tainted(left_behind, after, unsteered)
    if reference is not None and not cached:  # the user's code recomputes every position each step: so must it
        say("generating: the intent with the raw-hook reference, without the KV cache ...")
        reference = generate("reference", False, True)
    user = _records(generation, resolved)
    observed = observed_touches(observation.changes, resolved.batch)
    floor = None
    identity_uncached = resolved.spec.is_identity and not cached and Phase.UNSTEERED in phases
    needed = identity_uncached or _needs_floor(user, (reference.rows if reference is not None else (), unsteered))
    if needed and not tainted:  # a floor measured on a model still steered would be no floor
        say("generating: unsteered without the KV cache (the model's own rounding, for the logits tolerance) ...")
        floor = generate("floor", False, False).rows
    spent = clock.seconds
    cost = CheckCost(
        unsteered_s=spent.get("unsteered", 0.0),
        reference_s=spent.get("reference", 0.0),
        user_s=generation.generate_s,
        replay_s=generation.replay_s,
        after_s=spent.get("after", 0.0),
        floor_s=spent.get("floor", 0.0),
        observer_bytes=observation.held_bytes,
    )
    return UserRun(
        resolved=resolved,
        steering=steering,
        user=user,
        observation=observation,
        cached=cached,
        coverage=_coverage(user, observed, observation, observer, resolved, cached),
        reference=reference,
        unsteered=unsteered,
        after=after,
        left_behind=left_behind,
        unsteered_recompute=floor,
        tainted=tainted,
        decode=context.decode,
        dtype=context.dtype,
        cost=cost,
    )


T = TypeVar("T")


class _Clock:
    """Each phase's seconds, counted as the context's model work too."""

    def __init__(self, work: ModelWork) -> None:
        self.work = work
        self.seconds: dict[str, float] = {}

    def timed(self, phase: str, call: Callable[[], T]) -> T:
        started = time.perf_counter()
        try:
            return self.work.timed(call)
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - started
