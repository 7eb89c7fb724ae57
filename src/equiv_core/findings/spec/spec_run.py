"""Every arm of one steering spec, generated once and shared by the spec findings.

Arms: ``plain`` (nnsight plain invoke), ``iter`` (nnsight with the spec's step selector: the spec as written, in
one batched invoke), ``iter_per_invoke`` (the same, one ``tracer.invoke`` per prompt; batches only), ``recompute``
(nnsight without the KV cache, the edit at absolute positions re-applied at every step), ``hook`` and
``hook_recompute`` (the independent raw-hook reference, with and without the cache), and ``unsteered`` /
``unsteered_recompute`` (no edit, with and without the cache: the output to differ from, and the model's own
cached-vs-recomputed rounding). An arm that cannot write the spec is kept as "not expressible", with the reason.
For a batch of several prompts each prompt is also run alone, every arm, for ``batch_invariance``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial

import torch

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.nnsight_release import SpecStyle
from equiv_core.arms.reference import spec_hook_generate
from equiv_core.arms.resolved import ResolvedSpec
from equiv_core.arms.steering import GenerationRecord, NotExpressible, SpecGeneration, Touch
from equiv_core.config.catalog import ArmName
from equiv_core.findings.coverage_map import CoverageCheck, intended_touches
from equiv_core.observe.observer import BlockObserver
from equiv_core.observe.touches import ObservedTouches, observed_touches, unobservable

NNSIGHT_ARMS: tuple[ArmName, ...] = (ArmName.PLAIN, ArmName.ITER, ArmName.ITER_PER_INVOKE, ArmName.RECOMPUTE)
STEERED_ARMS: tuple[ArmName, ...] = (*NNSIGHT_ARMS, ArmName.HOOK, ArmName.HOOK_RECOMPUTE)
CACHED = {
    ArmName.PLAIN: True,
    ArmName.ITER: True,
    ArmName.ITER_PER_INVOKE: True,
    ArmName.RECOMPUTE: False,
    ArmName.HOOK: True,
    ArmName.HOOK_RECOMPUTE: False,
}
# How each nnsight arm writes the spec (iter_per_invoke: iter's code, one invoke per prompt).
STYLES: dict[ArmName, SpecStyle] = {
    ArmName.PLAIN: "plain",
    ArmName.ITER: "iter",
    ArmName.ITER_PER_INVOKE: "iter",
    ArmName.RECOMPUTE: "recompute",
}


@dataclass(frozen=True, slots=True, eq=False)
class ArmRun:
    """One steered arm: what it is, whether it could be written, what it generated and touched (per row)."""

    name: ArmName
    description: str
    cached: bool
    generation: SpecGeneration | None  # None: not expressible
    coverage: tuple[CoverageCheck, ...]  # one per batch row
    not_expressible: str = ""  # the reason, when generation is None

    @property
    def expressible(self) -> bool:
        return self.generation is not None

    @property
    def rows(self) -> tuple[GenerationRecord, ...]:
        if self.generation is None:
            raise ValueError(f"arm {self.name} is not expressible: {self.not_expressible}")
        return self.generation.rows

    @property
    def covers_intent(self) -> bool:
        """Expressible and touched exactly what the spec intends, in every row."""
        return self.expressible and all(check.matches for check in self.coverage)


@dataclass(frozen=True, slots=True, eq=False)
class SpecRun:
    """All arms of one spec on one prompt batch (and, for batches, each prompt alone)."""

    resolved: ResolvedSpec
    arms: dict[str, ArmRun]
    unsteered: tuple[GenerationRecord, ...]  # per row
    unsteered_recompute: tuple[GenerationRecord, ...]
    decode: Callable[[tuple[int, ...]], str]
    dtype: torch.dtype
    alone: tuple[SpecRun, ...] = ()  # per row: that prompt run alone (batches of several prompts only)

    @property
    def batch_size(self) -> int:
        return self.resolved.batch.size

    def expressible_arms(self) -> list[ArmRun]:
        return [arm for arm in self.arms.values() if arm.expressible]


def _description(name: ArmName, resolved: ResolvedSpec) -> str:
    literal = " (literal indices)" if resolved.spec.indexing == "literal" else ""
    written = (
        "nnsight plain invoke (as written: --steps prompt-pass)"
        if resolved.steps.kind == "prompt-pass"
        else f"nnsight {resolved.steps.describe()}{literal}"
    )
    return {
        ArmName.PLAIN: "nnsight plain invoke (fires on the prompt pass)",
        ArmName.ITER: written + (", one batched invoke" if resolved.batch.size > 1 else ""),
        ArmName.ITER_PER_INVOKE: written + ", one invoke per prompt",
        ArmName.RECOMPUTE: "nnsight iter[:N] without the KV cache, absolute positions re-edited every step",
        ArmName.HOOK: "raw PyTorch forward hook + HF generate, with the KV cache",
        ArmName.HOOK_RECOMPUTE: "raw PyTorch forward hook + HF generate, without the KV cache",
    }[name]


def _not_expressible(name: ArmName, resolved: ResolvedSpec) -> str:
    if name != ArmName.PLAIN or resolved.prompt_only:
        return ""
    generated = sorted(
        position
        for row, positions in enumerate(resolved.positions)
        for position in positions
        if position >= resolved.batch.lengths[row]
    )
    return (
        "a plain invoke fires only on the prompt pass; generated positions (e.g. "
        f"{generated[0]}) are first computed at step 1 or later"
    )


def _coverage(
    name: str,
    cached: bool,
    generation: SpecGeneration,
    resolved: ResolvedSpec,
    observed: ObservedTouches | None,
    observer: BlockObserver | None = None,
) -> tuple[CoverageCheck, ...]:
    """Each row's touches against its intent, over the steps the row ran (a row that stopped at EOS ran fewer).

    The touches are the observed ones, with what the arm's code recorded as a cross-check; for a spec that changes
    nothing (scale 0) nothing can be observed (an edit that writes the value already there is invisible), so there
    the recorded touches are judged, as they are where no observation was made (``observed`` None).
    """
    batch, checks = resolved.batch, []
    observed = _observed_at_site(observed, resolved)
    if not resolved.spec.site.is_default:
        observer = None  # what the next block received is a block output, not the site's tensor
    for row, record in enumerate(generation.rows):
        steps_run = len(record.generated_ids)
        intended = intended_touches(
            resolved.positions[row], resolved.layers, batch.lengths[row], steps_run, cached, row
        )
        recorded = frozenset(t for t in generation.touched if t.row == row and t.step < steps_run)
        faults = tuple(f for f in generation.faults if f.row == row and f.step < steps_run)
        passes = generation.passes if row == 0 else ()  # passes are the whole batch's: checked once
        fields = (intended, recorded, faults, passes, batch.lengths[row], row, batch.padded_length, steps_run)
        prefix = batch.prefix_length
        if observed is None or resolved.spec.is_identity:
            checks.append(CoverageCheck(name, cached, *fields, prefix_length=prefix))
            continue
        seen = observed.row(row, steps_run)
        invisible: frozenset[Touch] = frozenset()
        if observer is not None:  # recorded edits that write the value already there: unobservable, not missing
            invisible = unobservable(recorded - seen.touches, batch, observer, resolved.leaves_unchanged)
        checks.append(
            CoverageCheck(
                name,
                cached,
                intended,
                seen.touches | invisible,
                *fields[2:],
                recorded=recorded,
                pads=seen.pads,
                unobservable=invisible,
                prefix_length=prefix,
            )
        )
    return tuple(checks)


class _RightPaddingWarning(logging.Filter):
    """Drops transformers' right-padding warning: ``batch_invariance`` reports that pitfall itself, once, with the
    rows it affects, instead of one log line per ``generate`` call."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "right-padding was detected" not in record.getMessage()


@contextmanager
def _quiet_right_padding() -> Iterator[None]:
    logger, quiet = logging.getLogger("transformers.generation.utils"), _RightPaddingWarning()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def run_spec(
    context: SteeringContext, resolved: ResolvedSpec, progress: Callable[[str], None] | None = None
) -> SpecRun:
    """Generate every arm once (deterministic kernels are the caller's business) and check its coverage.

    ``progress`` gets one line as each arm starts, so a long batch (every arm again per prompt alone) is never
    silent for long.
    """
    with _quiet_right_padding():
        rows = resolved.batch.size
        return _run_spec(context, resolved, progress or (lambda _line: None), f" (batch of {rows})" if rows > 1 else "")


def _observed_at_site(observed: ObservedTouches | None, resolved: ResolvedSpec) -> ObservedTouches | None:
    """Observed touches in the site's terms, or None where observation cannot place the site's edits (the recorded
    touches are judged then). The observer reports a change of block L wherever block L's output, or anything
    computed inside it, differs from its replay (:mod:`equiv_core.observe.observer`): an edit of block L's
    attention, MLP or head input at a position shows there, at block L. An edit of block L's input shows as a change
    of block L-1 where block L receives exactly block L-1's output (probed: ``equals_previous_output``), and nothing
    before block 0 is replayed (with block 0 among the layers, every layer's recorded touches are judged); a module
    site may be one whose edit spreads to other positions inside the block (a key projection), so its changes say
    nothing about where the edit was made."""
    kind = resolved.spec.site.kind
    if observed is None or kind in ("block-output", "attention-output", "mlp-output", "head-input"):
        return observed
    bridged = all(site.equals_previous_output for site in resolved.sites)  # block L's input is L-1's output
    if kind == "block-input" and 0 not in resolved.layers and bridged:
        return ObservedTouches(
            frozenset(replace(touch, layer=touch.layer + 1) for touch in observed.touches),
            tuple(replace(pad, layer=pad.layer + 1) for pad in observed.pads),
        )
    return None


def _arm_names(resolved: ResolvedSpec) -> tuple[ArmName, ...]:
    """The arms a spec runs: one prompt has no ``iter_per_invoke`` (one invoke per prompt is ``iter``'s code)."""
    return tuple(name for name in STEERED_ARMS if name != ArmName.ITER_PER_INVOKE or resolved.batch.size > 1)


def _run_spec(context: SteeringContext, resolved: ResolvedSpec, say: Callable[[str], None], where: str = "") -> SpecRun:
    model, pad, work = context.loaded.model, context.loaded.tokenizer.pad_token_id, context.work  # work: timed
    arms: dict[str, ArmRun] = {}
    names = _arm_names(resolved)
    observer = BlockObserver(model, resolved.batch.input_ids[:1, :2])
    for index, name in enumerate(names, start=1):
        say(f"generating{where} arm {index}/{len(names)}: {name} ...")
        cached = CACHED[name]
        reason = _not_expressible(name, resolved)
        generation: SpecGeneration | None = None
        observed: ObservedTouches | None = None
        if not reason:
            try:
                with observer.watching(resolved.batch.prefix_length if cached else 0):
                    if name.startswith("hook"):
                        generation = work.timed(partial(spec_hook_generate, model, pad, resolved, cached))
                    else:
                        per_invoke = name == ArmName.ITER_PER_INVOKE
                        generation = context.nnsight.generate_spec(resolved, STYLES[name], per_invoke=per_invoke)
                observation = work.timed(observer.observation)
                observed = observed_touches(observation.changes, resolved.batch)
            except NotExpressible as error:
                reason = str(error)
        coverage = () if generation is None else _coverage(name, cached, generation, resolved, observed, observer)
        arms[name] = ArmRun(name, _description(name, resolved), cached, generation, coverage, reason)
    alone: tuple[SpecRun, ...] = ()
    rows = resolved.batch.size
    if rows > 1:
        alone = tuple(
            _run_spec(context, resolved.alone(row), say, f" (prompt {row + 1}/{rows} alone)") for row in range(rows)
        )
    say(f"generating{where}: unsteered, with and without the KV cache ...")
    return SpecRun(
        resolved=resolved,
        arms=arms,
        unsteered=work.timed(partial(spec_hook_generate, model, pad, resolved, True, steer=False)).rows,
        unsteered_recompute=work.timed(partial(spec_hook_generate, model, pad, resolved, False, steer=False)).rows,
        decode=context.decode,
        dtype=context.dtype,
        alone=alone,
    )
