"""Where a spec arm's edits land in one forward pass, the same for every nnsight arm: the spec's positions
translated into indices of the pass (what the arm writes) and what each index really lands on (the log the arm
keeps). Needs no nnsight: both arm families call it."""

from __future__ import annotations

from equiv_core.arms.resolved import ResolvedSpec
from equiv_core.arms.steering import IndexFault, Touch


def pass_offset(step: int, padded_length: int, cached: bool, prefix_length: int = 0) -> int:
    """Column of index 0 of the pass at ``step``: with the KV cache, ``L + step - 1`` after step 0, and at step 0
    the first column after a cached prefix."""
    if not cached:
        return 0
    return padded_length + step - 1 if step > 0 else prefix_length


def row_edits(
    resolved: ResolvedSpec,
    row: int,
    layer: int,
    length: int,
    believed_offset: int,
    actual_offset: int,
    actual_step: int,
    literal: bool,
    log: list[Touch | IndexFault],
) -> list[int]:
    """The indices into a pass of ``length`` positions that a spec arm edits for batch ``row`` at ``layer``: the
    row's positions translated into columns of the pass the arm believes it is at (``believed_offset``: column of
    index 0), or, with ``literal``, the spec's integers as written. Appends to ``log`` what each index lands on in
    the pass that really ran (``actual_offset``, ``actual_step``): a :class:`Touch` of the position, or an
    :class:`IndexFault` (``pad``: a pad column; ``out_of_range``: an index the pass does not have, not written)."""
    batch = resolved.batch
    written: dict[int, int] = {}  # local index -> the index as the code writes it
    if literal:
        for index in resolved.literal_indices:
            if -length <= index < length:
                written[index % length] = index
            else:
                log.append(IndexFault(actual_step, layer, index, length, row, "out_of_range"))
    else:
        for position in resolved.positions[row]:
            local = batch.column(row, position) - believed_offset
            if 0 <= local < length:
                written[local] = local
    for index, as_written in written.items():
        landed = batch.position_of(row, actual_offset + index)
        if landed is None:  # a pad column: the edit lands on padding
            log.append(IndexFault(actual_step, layer, as_written, length, row, "pad"))
        else:
            log.append(Touch(actual_step, layer, landed, row))
    return list(written)


def logged_edits(log: list[Touch | IndexFault]) -> tuple[frozenset[Touch], tuple[IndexFault, ...]]:
    """The touches and the index faults (in the order logged) of a :func:`row_edits` log."""
    touched = frozenset(entry for entry in log if isinstance(entry, Touch))
    return touched, tuple(entry for entry in log if isinstance(entry, IndexFault))
