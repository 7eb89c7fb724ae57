"""repeng (0.4.0): the intents written the way its README and notebooks steer generation: wrap the loaded model in
``ControlModel(model, layer_ids)``, ``set_control(vector, coeff)``, generate, ``reset()`` (README.md:20-52@0.4.0,
github.com/vgel/repeng/blob/0.4.0/README.md; notebooks/emotion.ipynb: ``model.reset()``,
``model.set_control(control_vector, 1.5)``, generate, ``model.reset()``), and on exit ``unwrap()``, its documented
removal (repeng/control.py:49-58@0.4.0).

- ``ControlModel.__init__`` (control.py:19-39) replaces each block ``model.model.layers[i]`` /
  ``model.transformer.h[i]`` (``model_layer_list``, control.py:200-209) in place by a ``ControlModule`` wrapping it;
  negative ids are allowed and normalised to absolute ones in ``self.layer_ids`` (control.py:31). No hook is
  registered; ``unwrap`` puts the original block objects back (control.py:55-58).
- The vector is built without training, as ``ControlVector.train`` returns one (repeng/extract.py:23-26, 59): the
  dataclass ``ControlVector(model_type, directions={layer: np.ndarray})``. ``set_control`` looks each direction up by
  the *normalised* layer id (control.py:76-79), so the keys are absolute block indices (``train`` keys them the same
  way, extract.py:260-262); a vector keyed by negative ids raises KeyError.
- ``set_control(vector, coeff)`` -> ``BlockControlParams(coeff * direction)`` per layer (control.py:75-80, 112,
  124-130); ``ControlModule.forward`` (control.py:149-197) applies ``operator(output, control * mask)`` (default
  ``+``) to the whole hidden-state output of *every* call of the block: under the KV cache, every prompt position at
  the prefill and the one new position at each decode pass. ``mask`` zeroes pad positions only when the block is
  called with a ``position_ids`` keyword (control.py:172-184: the columns before the first ``position_ids == 0``);
  transformers 5.x passes it to GPT-2 and Llama blocks (modeling_gpt2.py:608-616, modeling_llama.py:394-401@5.24.0),
  4.x GPT-2 does not (mask 1.0). With one unpadded prompt the mask is all ones at the prefill (the first 0 is column
  0) and at each decode pass (no 0 at all: ``argmax`` of an all-zero cumsum is column 0), so every position is
  steered either way.

There is no position, pass or ablation option: ``caa-generated`` written idiomatically adds at every prompt position
too, and ``original-zero`` and ``ablate-all`` cannot be written with ``set_control``'s addition. Their workarounds pass
a function of our own as ``set_control``'s documented ``operator`` keyword (control.py:68-72, 99-103), which no README
or notebook example uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import numpy as np
import torch
from repeng import ControlModel, ControlVector

from equiv_core.conformance.adapter import Adapter, Variant, Way
from equiv_core.conformance.intents import Intent
from equiv_core.conformance.vectors import SteeringTask

README = "https://github.com/vgel/repeng/blob/0.4.0/README.md (lines 20-52)"
CODE = "repeng/control.py@0.4.0"
HooksForm = Callable[[Any, Any], AbstractContextManager[None]]
Operator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _vector(model: Any, task: SteeringTask, unit: bool) -> ControlVector:
    """The task's rows (``unit``: its unit directions) as a ControlVector built without training: ``{layer: float32
    array}`` keyed by absolute block index, as ``ControlVector.train`` returns them (extract.py:59, 260-262, 296)."""
    rows = task.directions if unit else task.vectors
    assert rows is not None
    directions = {
        layer: np.asarray(row.detach().to("cpu").float().numpy()) for layer, row in zip(task.layers, rows, strict=True)
    }
    return ControlVector(model_type=model.config.model_type, directions=directions)


def _controlled(
    task: SteeringTask, coeff: float, make_operator: Callable[[], Operator] | None = None, unit: bool = False
) -> HooksForm:
    """Wrap ``task.layers`` in a ControlModel, ``set_control(vector, coeff)`` (with ``operator=`` a fresh function of
    ``make_operator`` where given), and on exit ``reset()`` and ``unwrap()``."""

    @contextmanager
    def steer(model: Any, tokenizer: Any) -> Iterator[None]:
        controlled = ControlModel(model, list(task.layers))
        try:
            vector = _vector(model, task, unit)
            if make_operator is None:
                controlled.set_control(vector, coeff)
            else:
                controlled.set_control(vector, coeff, operator=make_operator())
            yield
        finally:
            controlled.reset()
            controlled.unwrap()

    return steer


def actadd_all(task: SteeringTask) -> HooksForm:
    """``set_control(vector, scale)`` at block ``layers[0]``: ``h + scale * v`` at every position of every pass."""
    return _controlled(task, task.scale)


def caa_generated(task: SteeringTask) -> HooksForm:
    """The only way ``set_control`` adds: at every (non-pad) position, so the prompt positions before the last one are
    steered too at the prefill."""
    return actadd_all(task)


def caa_generated_last(task: SteeringTask) -> HooksForm:
    """``operator`` adding the control at position -1 of each call only: the last prompt position at the prefill, the
    one new position at each decode pass (KV cache). ``control`` arrives as ``control * mask``: ``[1, 1, hidden]``, or
    ``[batch, seq, hidden]`` with a ``position_ids`` mask; ``[:, -1:]`` of either is that position's row."""

    def make() -> Operator:
        def add_last(current: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
            steered = current.clone()
            steered[:, -1:] = current[:, -1:] + control[:, -1:]
            return steered

        return add_last

    return _controlled(task, task.scale, make)


def original_zero_prefill(task: SteeringTask) -> HooksForm:
    """``operator`` zeroing position ``prompt_length - 1`` in the first call of the wrapped block (the prefill) only.
    The operator runs only while a control tensor is set (control.py:152-155), so a zero vector is set with it."""
    last = task.prompt_length - 1

    def make() -> Operator:
        calls = 0

        def zero_last(current: torch.Tensor, _control: torch.Tensor) -> torch.Tensor:
            nonlocal calls
            calls += 1
            if calls > 1:
                return current
            steered = current.clone()
            steered[:, last] = 0.0
            return steered

        return zero_last

    return _controlled_zero(task, make)


def _controlled_zero(task: SteeringTask, make_operator: Callable[[], Operator]) -> HooksForm:
    """As :func:`_controlled` for a task without vectors (original-zero): a zero direction of the model's width at
    ``layers[0]``, made when the context is entered."""

    @contextmanager
    def steer(model: Any, tokenizer: Any) -> Iterator[None]:
        layer = task.layers[0]
        controlled = ControlModel(model, [layer])
        try:
            zero = np.zeros(int(model.config.get_text_config().hidden_size), dtype=np.float32)
            vector = ControlVector(model_type=model.config.model_type, directions={layer: zero})
            controlled.set_control(vector, 1.0, operator=make_operator())
            yield
        finally:
            controlled.reset()
            controlled.unwrap()

    return steer


def ablate_all_operator(task: SteeringTask) -> HooksForm:
    """Every block wrapped, ``set_control(unit directions, 1.0, operator=ablate)``: ``h - (h . d_l) d_l`` at every
    position of every pass (``control`` is ``d_l``, times the pad mask where there is one: a masked position is left
    as it is)."""

    def make() -> Operator:
        def ablate(current: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
            return current - (current * control).sum(dim=-1, keepdim=True) * control

        return ablate

    return _controlled(task, 1.0, make, unit=True)


ADD_ONLY = (
    "the README's and notebooks' set_control(vector, coeff) only adds coeff * direction to the whole output of the "
    "wrapped block, every position of every call (control.py:124-130, 149-197@0.4.0): no position, step or prefill "
    "selector and no projection; its operator= keyword (control.py:68-72) takes a function of the user's own, "
    "which the workaround cell writes"
)

ADAPTER = Adapter(
    distribution="repeng",
    ways=(
        Way(Intent.ACTADD_ALL, README, actadd_all),
        Way(
            Intent.CAA_GENERATED,
            README,
            caa_generated,
            note="set_control adds at every prompt position, not only the last",
        ),
        Way(
            Intent.CAA_GENERATED,
            f"{CODE}:60-73, 186 (operator)",
            caa_generated_last,
            variant=Variant.WORKAROUND,
            note="set_control with operator= adding the control at position -1 of each pass only",
        ),
        Way(Intent.ORIGINAL_ZERO, README, not_expressible=ADD_ONLY),
        Way(
            Intent.ORIGINAL_ZERO,
            f"{CODE}:60-73, 186 (operator)",
            original_zero_prefill,
            variant=Variant.WORKAROUND,
            note="zero control with operator= zeroing the last prompt position in the wrapped block's first call",
        ),
        Way(Intent.ABLATE_ALL, README, not_expressible=ADD_ONLY),
        Way(
            Intent.ABLATE_ALL,
            f"{CODE}:60-73, 186 (operator)",
            ablate_all_operator,
            variant=Variant.WORKAROUND,
            note="unit directions at every block with operator= h - (h.d)d",
        ),
    ),
)
