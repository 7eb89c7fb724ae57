"""The intents every library is asked to express, and what one cell hands a library's adapter.

An intent is one of equiv-bench's recipes (``equiv recipes``) with its steering vector replaced by a file the cell
writes once per model, so that the reference and every library apply the very same numbers. Standard library
only here; the vectors, and the task an adapter gets, are made by :mod:`equiv_core.conformance.vectors`.
"""

from __future__ import annotations

import enum
from pathlib import Path


class Variant(enum.StrEnum):
    """How a way is written: as the library's docs and examples write it; the idiomatic code with only a
    library behaviour that hides it from observation turned off (``hooks kept``: pyvene deletes every hook on the
    model, the observer's included), so that what it touches can be seen; or with a workaround for what the
    idiomatic version gets wrong. Each is a cell, side by side."""

    IDIOMATIC = "idiomatic"
    HOOKS_KEPT = "hooks kept"
    WORKAROUND = "workaround"


class Intent(enum.StrEnum):
    """What the steering is meant to do (the recipe of the same name, ``equiv recipes``).

    - ``actadd-all``: add ``scale * v`` to block ``layers[0]``'s output (the residual stream) at every position of
      every forward pass: the prompt at the prefill, the newest token at each decode pass (Turner et al. 2023).
    - ``caa-generated``: the same addition at the last prompt position and at every generated token (Rimsky et
      al. 2024; the position CAA#3 found its mask skipped), i.e. with the KV cache: position ``n - 1`` of the
      prefill and the one position of every decode pass.
    - ``original-zero``: zero block ``layers[0]``'s output at the last prompt position in the prefill only: the
      original study's ``iter[0]`` edit; later tokens see it through the KV cache only.
    - ``ablate-all``: directional ablation ``h - (h . d_l) d_l`` with a unit direction per block, at every block,
      every position of every pass (Arditi et al. 2024).
    """

    ACTADD_ALL = "actadd-all"
    CAA_GENERATED = "caa-generated"
    ORIGINAL_ZERO = "original-zero"
    ABLATE_ALL = "ablate-all"


# The recipes' own numbers (equiv_core.spec.recipes): ActAdd's contrast pair and coefficient, layer 1 (block 0
# for the original study's edit), and the ablated present/past direction of the default prompt.
CONTRAST = ("I love this", "I hate this")
TENSE = ("The weather today is", "The weather today was")
SCALE = 4.0
STEERED_LAYER = 1


def intent_layers(intent: Intent) -> str:
    """The blocks ``intent`` steers, as ``--layers`` writes them: block 0 for the original study's edit, every block
    for the ablation, :data:`STEERED_LAYER` otherwise."""
    return {Intent.ORIGINAL_ZERO: "0", Intent.ABLATE_ALL: ":"}.get(intent, str(STEERED_LAYER))


def intent_options(intent: Intent, vector_file: Path | None) -> dict[str, str]:
    """The spec options (as ``equiv check`` takes them) of ``intent`` with its vector read from ``vector_file``."""
    layers = intent_layers(intent)
    if intent is Intent.ORIGINAL_ZERO:
        return {"op": "zero", "layers": layers, "positions": "-1"}
    if vector_file is None:
        raise ValueError(f"intent {intent} needs its vector file")
    if intent is Intent.ABLATE_ALL:
        return {"op": "ablate", "vector": str(vector_file), "layers": layers, "positions": "all"}
    positions = "all" if intent is Intent.ACTADD_ALL else "last+generated"
    return {"op": "add", "vector": str(vector_file), "scale": str(SCALE), "layers": layers, "positions": positions}
