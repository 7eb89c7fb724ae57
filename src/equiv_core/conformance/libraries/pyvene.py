"""pyvene (0.1.8): the intents written with ``IntervenableModel.generate``, in the generate form, the way pyvene's
tutorial and docs write steering during generation (pyvene_101.ipynb and docs/source/index.rst at tag v0.1.8;
the code cited is the 0.1.8 wheel, identical to the tag).

The model is wrapped as every pyvene example does it: ``pv.IntervenableModel(config, model=model)`` on the loaded
Hugging Face model, one representation per steered block, named as the docs name a module directly
(``"component": "model.layers[20].output"``: pyvene_101.ipynb@v0.1.8 line 1273, docs/source/index.rst line 97), here
``f"{path}[{layer}].output"`` with ``path`` = ``transformer.h`` or ``model.layers``. pyvene hooks that module with
``register_forward_hook`` (pyvene/models/modeling_utils.py:166-172@0.1.8), the very site its abstract
``"block_output"`` names for GPT-2 and Llama (models/gpt2/modelings_intervenable_gpt2.py:18,
models/llama/modelings_intervenable_llama.py:18: ``("h[%s]" / "layers[%s]", register_forward_hook)``).

Which forward passes ``generate`` covers (pyvene/models/intervenable_base.py@0.1.8; issues #15 and #193):

- ``unit_locations=None`` with ``intervene_on_prompt=True`` (the "Model Steering" tutorial, pyvene_101.ipynb lines
  1196-1361: "set to None means intervention will be applied for each forward call"): the setter's generation gate
  is skipped (``unit_locations_base[key_i] is not None`` is false, line 1556), so every pass (the prefill and each
  decode pass) is edited, and the intervention gets the whole output (gather 484-486, scatter 528-530).
- positions given: the gate (1556-1561) keeps the prefill only (``intervene_on_prompt=True``) or the decode passes only
  (``False``), never both.
- the default (``intervene_on_prompt=False``, no ``unit_locations``) becomes ``unit_locations={"base": 0}`` ("we
  intervene on every generated tokens!", 2096-2098): position 0 of each decode pass (with the KV cache, the newest
  token), and not the prefill.

What may bite: every ``generate`` (and ``forward``) starts and ends with ``_cleanup_states`` (2091, 2163; 1143-1148),
which calls ``remove_forward_hooks(self.model)`` (1137-1141; modeling_utils.py:77-96): it pops every forward hook and
forward pre-hook of every submodule of the model, whoever registered them (equiv check's observer included). pyvene
removes its own hooks by their handles anyway (``set_handlers_to_remove.remove()``, 2159-2161), so the workaround ways
turn only that blanket removal off, on their own instance. The wrapper also puts the model in ``eval()`` and sets
``requires_grad=False`` on every parameter, in place (254, 347-355).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyvene as pv
import torch

from equiv_core.conformance.adapter import Adapter, Form, Variant, Way
from equiv_core.conformance.intents import Intent
from equiv_core.conformance.vectors import SteeringTask
from equiv_core.models.architecture import find_decoder_layers

TUTORIAL = "https://github.com/stanfordnlp/pyvene/blob/v0.1.8/pyvene_101.ipynb"
STEERING = f"{TUTORIAL} (Advanced Intervention on LMs Generation (Model Steering), lines 1196-1361)"
GENERATION = (
    f"{TUTORIAL} (Inference-time Intervention, lines 2405-2519; LMs Generation, lines 1032-1095); "
    "pyvene/models/intervenable_base.py:2096-2098@0.1.8"
)
ZEROS = f"{TUTORIAL} (Set Activation to Zeros, lines 254-286); pyvene/models/intervenable_base.py:1556-1561@0.1.8"
KEEP_HOOKS = (
    "pyvene's generate pops every forward (pre-)hook of the model (remove_forward_hooks, "
    "modeling_utils.py:77-96@0.1.8); this way leaves others' hooks in place"
)
GenerateForm = Callable[..., Any]
Representations = Callable[[torch.nn.Module], list[dict[str, Any]]]


class _Steer(pv.ConstantSourceIntervention):  # type: ignore[misc]
    """The tutorial's ``HappyIntervention``: ``base + subspaces["mag"] * vector``, the magnitude handed to
    ``generate`` in ``subspaces``, ``keep_last_dim=True`` so that it gets ``[batch, seq, hidden]``."""

    def __init__(self, vector: torch.Tensor, **kwargs: Any) -> None:
        super().__init__(**kwargs, keep_last_dim=True)
        self.vector = vector

    def forward(
        self, base: torch.Tensor, source: Any = None, subspaces: dict[str, float] | None = None, **kwargs: Any
    ) -> torch.Tensor:
        assert subspaces is not None
        return base + subspaces["mag"] * self.vector


class _SteerLast(_Steer):
    """``_Steer`` at the last position of each pass only: the last prompt position at the prefill, the one
    position each decode pass computes with the KV cache."""

    def forward(
        self, base: torch.Tensor, source: Any = None, subspaces: dict[str, float] | None = None, **kwargs: Any
    ) -> torch.Tensor:
        assert subspaces is not None
        steered = base.clone()
        steered[:, -1] = base[:, -1] + subspaces["mag"] * self.vector
        return steered


class _Ablate(pv.ConstantSourceIntervention):  # type: ignore[misc]
    """Directional ablation ``h - (h . d) d`` written as the tutorial writes a custom intervention."""

    def __init__(self, direction: torch.Tensor, **kwargs: Any) -> None:
        super().__init__(**kwargs, keep_last_dim=True)
        self.direction = direction

    def forward(self, base: torch.Tensor, source: Any = None, subspaces: Any = None, **kwargs: Any) -> torch.Tensor:
        return base - (base @ self.direction).unsqueeze(-1) * self.direction


def _component(model: torch.nn.Module, layer: int) -> str:
    """pyvene's direct name of block ``layer``'s output: ``model.layers[L].output`` or ``transformer.h[L].output``."""
    path, _ = find_decoder_layers(model)
    return f"{path}[{layer}].output"


def _leave_other_hooks() -> None:
    """Stands in for ``IntervenableModel._remove_forward_hooks`` (the blanket removal); pyvene's own hooks are still
    removed by their handles."""


def _generate(representations: Representations, keep_hooks: bool, **intervene: Any) -> GenerateForm:
    """A generate-form function: wrap the model, then ``pv_model.generate(base, **intervene, max_new_tokens=...)``
    and return the intervened ids (pyvene returns ``(original, intervened)``; the original is None unless
    ``output_original_output``)."""

    def steer(model: Any, tokenizer: Any, input_ids: Any, attention_mask: Any, new: int, kwargs: Any) -> Any:
        config = pv.IntervenableConfig(representations=representations(model))
        pv_model = pv.IntervenableModel(config, model=model)
        if keep_hooks:
            pv_model._remove_forward_hooks = _leave_other_hooks
        base = {"input_ids": input_ids, "attention_mask": attention_mask}
        _, steered = pv_model.generate(base, **intervene, max_new_tokens=new, **kwargs)
        return steered

    return steer


def actadd_all(task: SteeringTask, keep_hooks: bool = False) -> GenerateForm:
    """The steering tutorial as written: ``unit_locations=None``, ``intervene_on_prompt=True``, the magnitude in
    ``subspaces``: every position of every pass."""
    assert task.vectors is not None
    layer, vector = task.layers[0], task.vectors[0]

    def representations(model: torch.nn.Module) -> list[dict[str, Any]]:
        intervention = _Steer(vector, embed_dim=int(vector.shape[-1]))
        return [{"layer": layer, "component": _component(model, layer), "intervention": intervention}]

    return _generate(
        representations, keep_hooks, unit_locations=None, intervene_on_prompt=True, subspaces=[{"mag": task.scale}]
    )


def caa_generated(task: SteeringTask, keep_hooks: bool = False) -> GenerateForm:
    """The docs' steering during decoding (the ITI example): ``pv.AdditionIntervention(source_representation=...)``
    and a plain ``generate``, i.e. ``unit_locations={"base": 0}`` on the decode passes only: every generated token
    that is fed back, but not the last prompt position (the prefill is skipped, intervenable_base.py:1556-1561)."""
    assert task.vectors is not None
    layer, added = task.layers[0], task.scale * task.vectors[0]

    def representations(model: torch.nn.Module) -> list[dict[str, Any]]:
        intervention = pv.AdditionIntervention(source_representation=added)
        return [{"layer": layer, "component": _component(model, layer), "intervention": intervention}]

    return _generate(representations, keep_hooks)


def caa_generated_last(task: SteeringTask) -> GenerateForm:
    """The steering tutorial's form (every pass, ``unit_locations=None``, ``intervene_on_prompt=True``) with an
    intervention that edits the last position of each pass: ``n - 1`` at the prefill, the newest token after."""
    assert task.vectors is not None
    layer, vector = task.layers[0], task.vectors[0]

    def representations(model: torch.nn.Module) -> list[dict[str, Any]]:
        intervention = _SteerLast(vector, embed_dim=int(vector.shape[-1]))
        return [{"layer": layer, "component": _component(model, layer), "intervention": intervention}]

    return _generate(
        representations, True, unit_locations=None, intervene_on_prompt=True, subspaces=[{"mag": task.scale}]
    )


def original_zero(task: SteeringTask, keep_hooks: bool = False) -> GenerateForm:
    """``pv.ZeroIntervention`` at ``unit_locations={"base": n - 1}`` with ``intervene_on_prompt=True``: the prefill
    only ("Whether only intervene on prompt", intervenable_base.py:2077)."""
    layer = task.layers[0]

    def representations(model: torch.nn.Module) -> list[dict[str, Any]]:
        return [{"layer": layer, "component": _component(model, layer), "intervention": pv.ZeroIntervention()}]

    return _generate(
        representations, keep_hooks, unit_locations={"base": task.prompt_length - 1}, intervene_on_prompt=True
    )


def ablate_all(task: SteeringTask, keep_hooks: bool = False) -> GenerateForm:
    """One custom intervention per block (the tutorial's form), every pass, every position."""
    assert task.vectors is not None
    directions = list(zip(task.layers, task.directions, strict=True))

    def representations(model: torch.nn.Module) -> list[dict[str, Any]]:
        return [
            {
                "layer": layer,
                "component": _component(model, layer),
                "intervention": _Ablate(direction, embed_dim=int(direction.shape[-1])),
            }
            for layer, direction in directions
        ]

    return _generate(representations, keep_hooks, unit_locations=None, intervene_on_prompt=True)


def _keeping_hooks(way: Callable[[SteeringTask, bool], GenerateForm]) -> Callable[[SteeringTask], GenerateForm]:
    """``way`` with pyvene's blanket hook removal turned off on its instance."""

    def build(task: SteeringTask) -> GenerateForm:
        return way(task, True)

    return build


ADAPTER = Adapter(
    distribution="pyvene",
    ways=(
        Way(Intent.ACTADD_ALL, STEERING, actadd_all, Form.GENERATE),
        Way(Intent.CAA_GENERATED, GENERATION, caa_generated, Form.GENERATE),
        Way(Intent.ORIGINAL_ZERO, ZEROS, original_zero, Form.GENERATE),
        Way(Intent.ABLATE_ALL, STEERING, ablate_all, Form.GENERATE),
        *(
            Way(intent, source, _keeping_hooks(way), Form.GENERATE, Variant.HOOKS_KEPT, note=KEEP_HOOKS)
            for intent, source, way in (
                (Intent.ACTADD_ALL, STEERING, actadd_all),
                (Intent.CAA_GENERATED, GENERATION, caa_generated),
                (Intent.ORIGINAL_ZERO, ZEROS, original_zero),
                (Intent.ABLATE_ALL, STEERING, ablate_all),
            )
        ),
        Way(
            Intent.CAA_GENERATED,
            STEERING,
            caa_generated_last,
            Form.GENERATE,
            Variant.WORKAROUND,
            note="generate intervenes on the prompt or the decode passes, never both, where positions are given "
            "(pyvene#15, #193): unit_locations=None on every pass, the intervention editing the last position; "
            "others' hooks left in place",
        ),
    ),
)
