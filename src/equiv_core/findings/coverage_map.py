"""The coverage map: which (step, layer, position, row) each arm's edit touched, against what the spec intends.

Independent pieces meet here: the block observer sees what each generation changed, whoever wrote it
(:mod:`equiv_core.observe`); the nnsight arms and the raw-hook reference record what their own code edited (the
reference finds positions by counting tokens, not by the nnsight arms' translation), a cross-check of the
observation; and :func:`intended_touches` derives what should be touched from the spec alone. A gap is reported in words
("touched step 0 only: generated tokens 1-7 were not steered") and drawn as a step x position grid.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from equiv_core.arms.steering import IndexFault, PadChange, PassShape, Touch


def first_step(position: int, prompt_length: int) -> int:
    """The generation step at which ``position`` is first computed: 0 for the prompt, ``p - n + 1`` after."""
    return 0 if position < prompt_length else position - prompt_length + 1


def intended_touches(
    positions: Iterable[int], layers: Iterable[int], prompt_length: int, new_tokens: int, cached: bool, row: int = 0
) -> frozenset[Touch]:
    """What a correct arm touches. With the KV cache each position is edited once, at the step that first
    computes it (later steps reuse its cached keys and values); without the cache every step recomputes every
    earlier position, so the edit must be re-applied at every step from that one on."""
    touches = set()
    for position in positions:
        first = first_step(position, prompt_length)
        steps = [first] if cached else range(first, new_tokens)
        touches |= {Touch(step, layer, position, row) for step in steps if step < new_tokens for layer in layers}
    return frozenset(touches)


def computed_positions(step: int, prompt_length: int, cached: bool, prefix_length: int = 0) -> range:
    """Positions a forward pass computes at ``step``: with the cache the prompt at step 0 (after a cached prefix,
    prefilled before generation), then one new position; without it, every position so far."""
    if cached and step > 0:
        return range(prompt_length + step - 1, prompt_length + step)
    return range(prefix_length if cached else 0, prompt_length + step)


def ranges(values: Iterable[int]) -> str:
    """``1, 3-5``: sorted integers with consecutive runs collapsed."""
    ordered = sorted(set(values))
    parts: list[str] = []
    start = previous = None
    for value in [*ordered, None]:
        if value is not None and previous is not None and value == previous + 1:
            previous = value
            continue
        if start is not None:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
        start = previous = value
    return ", ".join(parts)


def _plural(word: str, values: set[int]) -> str:
    return f"{word}{'s' if len(values) > 1 else ''} {ranges(values)}"


def _block(touches: frozenset[Touch] | set[Touch]) -> str | None:
    """``positions P at steps S (layers L)`` when the touches are exactly that product, else None."""
    positions, steps, layers = {t.position for t in touches}, {t.step for t in touches}, {t.layer for t in touches}
    if len(touches) != len(positions) * len(steps) * len(layers):
        return None
    return f"{_plural('position', positions)} at {_plural('step', steps)} ({_plural('layer', layers)})"


def _summary(touches: frozenset[Touch], prompt_length: int) -> str:
    """The touches in words, exact: one product block, the newest position of each decode step (the KV cache's
    diagonal), or one block per step (the first three, then a count)."""
    whole = _block(touches)
    if whole is not None:
        return whole
    step_set, layers = {t.step for t in touches}, {t.layer for t in touches}
    newest = all(t.step > 0 and t.position == prompt_length + t.step - 1 for t in touches)
    if newest and len(touches) == len(step_set) * len(layers):
        where = f"{_plural('position', {t.position for t in touches})}, {_plural('layer', layers)}"
        return f"the newest position at {_plural('step', step_set)} ({where})"
    steps = sorted(step_set)
    parts = []
    for step in steps[:3]:
        at_step = {t for t in touches if t.step == step}
        parts.append(
            _block(at_step)
            or "; ".join(
                _block({t for t in at_step if t.layer == layer}) or "" for layer in sorted({t.layer for t in at_step})
            )
        )
    more = f"; and at {len(steps) - 3} more steps" if len(steps) > 3 else ""
    return "; ".join(parts) + more


def pad_summary(pads: tuple[PadChange, ...]) -> str:
    """``row 1 columns 0-2 at step 0 (layer 1)``, one part per row."""
    parts = []
    for row in sorted({pad.row for pad in pads}):
        mine = [pad for pad in pads if pad.row == row]
        columns, steps, layers = ({getattr(pad, key) for pad in mine} for key in ("column", "step", "layer"))
        parts.append(f"row {row} {_plural('column', columns)} at {_plural('step', steps)} ({_plural('layer', layers)})")
    return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class CoverageCheck:
    """One arm's touches against the intended ones.

    ``touched``: what the arm was observed to change (or, where it was not observed, what its code recorded);
    ``recorded``: what its code recorded, when the touches are observed: the two must agree (an edit recorded that
    changed nothing, or a change nobody recorded, is a problem of its own); ``pads``: changes at pad columns;
    ``unobservable``: cells counted as touched although nothing changed there, because the intended edit writes the
    value already there (observation cannot see it, and no output depends on it).
    """

    arm: str
    cached: bool
    intended: frozenset[Touch]
    touched: frozenset[Touch]
    faults: tuple[IndexFault, ...] = ()
    passes: tuple[PassShape, ...] = ()  # the passes the arm fired on; empty: not recorded
    prompt_length: int = 0  # this row's real prompt tokens
    row: int = 0
    padded_length: int = 0  # the batch's padded prompt length (0: the same as prompt_length)
    steps_run: int = 0  # the steps this row generated (fewer than asked when it stopped at EOS; 0: unknown)
    recorded: frozenset[Touch] | None = None  # what the arm's code recorded; None: no cross-check
    pads: tuple[PadChange, ...] = ()
    unobservable: frozenset[Touch] = frozenset()  # in ``touched``: the edit writes the value already there
    prefix_length: int = 0  # a cached prefix's tokens (--prefix): not computed by generation's passes

    @property
    def missed(self) -> frozenset[Touch]:
        return self.intended - self.touched

    @property
    def unintended(self) -> frozenset[Touch]:
        return self.touched - self.intended

    def _expected_pass_length(self, step: int) -> int:
        return len(computed_positions(step, self.padded_length or self.prompt_length, self.cached, self.prefix_length))

    @property
    def unexpected_passes(self) -> tuple[PassShape, ...]:
        """Passes whose length is not what the KV cache (or its absence) implies: the column numbering every
        recorded touch relies on does not hold there."""
        return tuple(shape for shape in self.passes if shape.length != self._expected_pass_length(shape.step))

    @property
    def disagreements(self) -> tuple[frozenset[Touch], frozenset[Touch]]:
        """``(recorded but not observed, observed but not recorded)``; both empty without a record to check."""
        if self.recorded is None:
            return frozenset(), frozenset()
        return self.recorded - self.touched, self.touched - self.recorded

    @property
    def matches(self) -> bool:
        clean = not self.faults and not self.unexpected_passes and not self.pads and not any(self.disagreements)
        return clean and not self.missed and not self.unintended

    def problems(self) -> list[str]:
        """What went wrong, in the field's words; [] when the arm touched exactly what was intended."""
        problems = []
        for shape in self.unexpected_passes[:3]:
            expected = self._expected_pass_length(shape.step)
            problems.append(
                f"step {shape.step} layer {shape.layer}: the pass held {shape.length} positions, expected {expected} "
                f"({'with' if self.cached else 'without'} the KV cache), so its positions cannot be placed"
            )
        for kind, index in sorted({(fault.kind, fault.index) for fault in self.faults}):
            steps = [fault.step for fault in self.faults if (fault.kind, fault.index) == (kind, index)]
            if kind == "pad":
                problems.append(f"index {index} landed on a pad token at steps {ranges(steps)}")
            else:
                problems.append(f"position {index} out of range at steps {ranges(steps)}")
        missed, touched_steps = self.missed, sorted({t.step for t in self.touched})
        missed_steps = sorted({t.step for t in missed})
        if self.intended and not self.touched:
            problems.append("touched nothing: steering not applied")
        elif missed and touched_steps == [0] and missed_steps[0] >= 1:
            problems.append(f"touched step 0 only: generated tokens {ranges(missed_steps)} were not steered")
        elif (
            missed
            and missed_steps[0] == 0
            and touched_steps[0] > 0
            and set(missed_steps) <= set(range(touched_steps[0]))
        ):
            late = touched_steps[0]
            first = "the first generated token was" if late == 1 else f"the first {late} generated tokens were"
            prompt_missed = {t.position for t in missed if t.position < self.prompt_length - 1}
            also = f" (nor were prompt positions {ranges(prompt_missed)})" if prompt_missed else ""
            problems.append(f"started at step {late}: {first} not steered{also}")
        elif missed:
            problems.append(f"missed {_summary(missed, self.prompt_length)}")
        if self.unintended:
            problems.append(f"touched {_summary(self.unintended, self.prompt_length)}, which the spec does not steer")
        if self.pads:
            problems.append(
                f"touched pad positions, which hold no token ({pad_summary(self.pads)}): the steering ignores the "
                "attention mask"
            )
        unseen, unrecorded = self.disagreements
        if unseen:
            problems.append(f"recorded an edit at {_summary(unseen, self.prompt_length)} that changed nothing")
        if unrecorded:
            problems.append(f"changed {_summary(unrecorded, self.prompt_length)} without recording an edit there")
        return problems

    def grid(self, prompt_length: int, new_tokens: int) -> list[str]:
        """A step x position picture: ``#`` touched as intended, ``o`` intended but missed, ``x`` touched but not
        intended, ``.`` computed and left alone, blank: not computed in that pass (the KV cache's staircase).

        ``new_tokens``: the steps this row ran (fewer when it stopped at EOS). A long prompt's leading positions
        that no edit concerns are folded into one ``..`` column.
        """
        last = prompt_length + new_tokens - 2
        width = len(str(last))
        by_cell: dict[tuple[int, int], set[str]] = {}
        for kind, touches in (
            ("missed", self.missed),
            ("unintended", self.unintended),
            ("ok", self.intended & self.touched),
        ):
            for touch in touches:
                by_cell.setdefault((touch.step, touch.position), set()).add(kind)
        concerned = [position for _step, position in by_cell if position < prompt_length]
        first = min(concerned, default=prompt_length)
        folded = first > 6  # fold 0 .. first-2, keep one plain column before the first edited position
        shown = ([] if not folded else [None]) + list(range(first - 1 if folded else 0, last + 1))

        def render(cells: list[str]) -> str:
            prompt_cells = [
                cell
                for position, cell in zip(shown, cells, strict=True)
                if position is None or position < prompt_length
            ]
            rest = cells[len(prompt_cells) :]
            return " ".join(prompt_cells) + " | " + " ".join(rest)

        header = [f"{'..':>{width}}" if position is None else f"{position:>{width}}" for position in shown]
        lines = [f"{'position':>9} {render(header)}"]
        for step in range(new_tokens):
            computed = computed_positions(step, prompt_length, self.cached, self.prefix_length)
            cells = []
            for position in shown:
                if position is None:
                    cells.append(f"{'..' if step == 0 or not self.cached else '':>{width}}")
                    continue
                kinds = by_cell.get((step, position), set())
                symbol = "o" if "missed" in kinds else "x" if "unintended" in kinds else "#" if kinds else None
                cells.append(f"{symbol or ('.' if position in computed else ' '):>{width}}")
            faults = sorted({(fault.kind, fault.index) for fault in self.faults if fault.step == step})
            note = "".join(
                f"  ! index {index} {'lands on a pad token' if kind == 'pad' else 'out of range'}"
                for kind, index in faults
            )
            lines.append(f"{'step ' + str(step):>9} {render(cells).rstrip()}{note}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "arm": self.arm,
            "row": self.row,
            "cached": self.cached,
            "matches": self.matches,
            "problems": self.problems(),
            "touched": [touch.to_list() for touch in sorted(self.touched)],
            "intended": [touch.to_list() for touch in sorted(self.intended)],
            "faults": [fault.to_dict() for fault in self.faults],
            **({} if self.recorded is None else {"recorded": [touch.to_list() for touch in sorted(self.recorded)]}),
            "pad_changes": [pad.to_list() for pad in self.pads],  # [step, layer, column, row]
            "unobservable": [touch.to_list() for touch in sorted(self.unobservable)],
            "unexpected_passes": [[shape.step, shape.layer, shape.length] for shape in self.unexpected_passes],
        }
