"""Observed changes in the project's coordinates: a change at a padded column becomes a touch at a row-relative
position (:mod:`equiv_core.models.inputs`), or, at a pad column, a pad change (no token there to give it)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from equiv_core.arms.steering import PadChange, Touch
from equiv_core.models.inputs import PromptBatch
from equiv_core.observe.observer import BlockObserver, Change


@dataclass(frozen=True, slots=True)
class ObservedTouches:
    """What an observed generation changed: ``touches`` at row-relative positions, ``pads`` at pad columns."""

    touches: frozenset[Touch]
    pads: tuple[PadChange, ...]

    def row(self, row: int, steps_run: int) -> ObservedTouches:
        """Row ``row``'s part, over its first ``steps_run`` steps (a row that stopped at EOS ran fewer)."""
        return ObservedTouches(
            frozenset(t for t in self.touches if t.row == row and t.step < steps_run),
            tuple(p for p in self.pads if p.row == row and p.step < steps_run),
        )


def observed_touches(changes: frozenset[Change], batch: PromptBatch) -> ObservedTouches:
    """``changes`` (padded columns) as touches of ``batch``'s rows, and the ones that fell on pad columns."""
    touches, pads = set(), []
    for change in changes:
        position = batch.position_of(change.row, change.column)
        if position is None:
            pads.append(PadChange(change.step, change.layer, change.column, change.row))
        else:
            touches.add(Touch(change.step, change.layer, position, change.row))
    return ObservedTouches(frozenset(touches), tuple(sorted(pads)))


def unobservable(
    touches: Iterable[Touch],
    batch: PromptBatch,
    observer: BlockObserver,
    no_op: Callable[[int, torch.Tensor], bool],
) -> frozenset[Touch]:
    """Those of ``touches`` (not observed) where the edit would write the value already there, so that observation
    cannot tell it from no edit, and no output can either: ``no_op(layer, value)`` says whether the edit leaves
    ``value`` ([hidden], what the next module received) unchanged, e.g. zeroing a state that is already zero
    (a Llama block whose input is all zeros outputs zeros)."""
    found = set()
    for touch in touches:
        value = observer.received_value(touch.step, touch.layer, batch.column(touch.row, touch.position), touch.row)
        if value is not None and no_op(touch.layer, value):
            found.add(touch)
    return frozenset(found)
