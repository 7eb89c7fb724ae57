"""nnterp (1.3.0): the intents written with ``StandardizedTransformer``'s standardized names and its ``steer``
helper, inside ``model.generate``, the way nnterp writes generation-time edits.

Wrapping: ``StandardizedTransformer(model, tokenizer=tokenizer)`` (``model: str | Module``,
nnterp/standardized_transformer.py@1.3.0:83-127; nnterp's docs only show the hub-name form, and
``LanguageModel(hf_model, rename=get_rename_dict())`` for a loaded model, docs/advanced-features.rst@v1.3.0:62-70).
It is an ``nnsight.LanguageModel`` subclass; its kwargs ``device_map="auto"`` (line 99), ``attn_implementation``
(lines 106-110), ``tokenizer_kwargs`` and ``trust_remote_code`` go to ``LanguageModel``, whose pre-loaded-module path
ignores them (nnsight/modeling/mixins/loadable.py@0.7.0:265-275): the model keeps its device, dtype and attention
kernel. ``check_renaming=True`` (default, lines 156-159) then reads ``layers_output[0]`` etc. under ``model.scan`` of
``input_ids=[[0, 1, 1]]`` (fake tensors), falling back to a real ``model.trace`` forward that it stops
(nnterp/utils.py@1.3.0:95-154, nnterp/rename_utils.py@1.3.0:705-759): passes before the generation.

Steering: ``model.steer(layers, steering_vector, factor=1, token_positions=None)`` does
``layers_output[l] += factor * steering_vector`` (``[:, token_positions]`` when given), layers sorted
(standardized_transformer.py@1.3.0:282-326). nnterp's docs write it inside ``model.trace`` (one forward;
README.md@v1.3.0:114-123, docs/basic-usage.rst@v1.3.0:98-115) and show no steering during generation; nnterp's only
generation code, ``patchscope_generate`` (nnterp/interventions.py@1.3.0:343-351), edits the prompt only (no step
loop: in nnsight 0.6 / 0.7 an edit with no ``tracer.iter`` applies to the first forward only). Steering during
generation is therefore written as nnsight documents it, the nnterp call inside ``for step in tracer.iter[:N]``
("Multiple Token Generation", nnsight.net/notebooks/features/multiple_token/), bounded like the nnsight adapter;
the original study's prefill-only edit is the no-loop form. Zeroing and ablation have no nnterp helper: they assign
through ``model.layers_output[i]`` (README.md@v1.3.0:87-88, "Direct interventions").

nnterp 1.3.0 imports ``nnsight.intervention.tracing.globals`` (nnterp/utils.py@1.3.0:8), which nnsight 0.8 removed:
it needs nnsight >= 0.6, < 0.8 (its metadata says only ``nnsight>=0.6``). Ids come from ``tracer.result``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from nnterp import StandardizedTransformer

from equiv_core.conformance.adapter import Adapter, Form, Way
from equiv_core.conformance.intents import Intent
from equiv_core.conformance.vectors import SteeringTask

ACCESSOR_DOCS = (
    "https://github.com/ndif-team/nnterp/blob/v1.3.0/README.md (model.layers_output[i] = ..., lines 87-88); "
    "nnterp/interventions.py@1.3.0:343-351 (edits in model.generate, no step loop)"
)
ITER_DOCS = "nnterp README.md@v1.3.0:114-123 + https://nnsight.net/notebooks/features/multiple_token/ (tracer.iter)"

GenerateForm = Callable[..., Any]
Edit = Callable[[StandardizedTransformer], None]


def _wrap(model: torch.nn.Module, tokenizer: Any) -> StandardizedTransformer:
    """The loaded model wrapped as nnterp takes it (module renaming checked, the default)."""
    return StandardizedTransformer(model, tokenizer=tokenizer)


def _generate_first_pass(edit: Edit) -> GenerateForm:
    """A generate-form function written as nnterp writes a generation-time edit (patchscope_generate): the edit in
    the invoke, no step loop, then ``tracer.result``."""

    def steer(model: Any, tokenizer: Any, input_ids: Any, attention_mask: Any, new: int, kwargs: Any) -> Any:
        st = _wrap(model, tokenizer)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        with st.generate(max_new_tokens=new, **kwargs) as tracer:
            with tracer.invoke(inputs):
                edit(st)
                ids = tracer.result.save()
        return ids

    return steer


def _generate_every_step(edit: Edit) -> GenerateForm:
    """The same, with the edit inside ``for step in tracer.iter[:new]``: every forward pass of the generation."""

    def steer(model: Any, tokenizer: Any, input_ids: Any, attention_mask: Any, new: int, kwargs: Any) -> Any:
        st = _wrap(model, tokenizer)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        with st.generate(max_new_tokens=new, **kwargs) as tracer:
            with tracer.invoke(inputs):
                for _step in tracer.iter[:new]:
                    edit(st)
                ids = tracer.result.save()
        return ids

    return steer


def _add(task: SteeringTask, last_only: bool) -> Edit:
    """``model.steer`` of ``task.vectors[0]`` at ``task.layers[0]`` with ``factor=task.scale``: every position, or
    ``token_positions=-1``."""
    assert task.vectors is not None
    layer, vector, scale = task.layers[0], task.vectors[0], task.scale

    def edit(st: StandardizedTransformer) -> None:
        if last_only:
            st.steer(layers=layer, steering_vector=vector, factor=scale, token_positions=-1)
        else:
            st.steer(layers=layer, steering_vector=vector, factor=scale)

    return edit


def _ablate(task: SteeringTask) -> Edit:
    assert task.vectors is not None
    directions = list(zip(task.layers, task.directions, strict=True))

    def edit(st: StandardizedTransformer) -> None:
        for layer, direction in directions:  # ascending: the accessors must follow the forward order
            hidden = st.layers_output[layer]
            st.layers_output[layer] = hidden - (hidden @ direction).unsqueeze(-1) * direction

    return edit


def actadd_all_every_step(task: SteeringTask) -> GenerateForm:
    return _generate_every_step(_add(task, last_only=False))


def caa_generated_every_step(task: SteeringTask) -> GenerateForm:
    return _generate_every_step(_add(task, last_only=True))


def original_zero(task: SteeringTask) -> GenerateForm:
    """``layers_output[L][:, -1] = 0`` with no step loop: the prefill's last prompt position only."""
    layer = task.layers[0]

    def edit(st: StandardizedTransformer) -> None:
        st.layers_output[layer][:, -1] = 0.0

    return _generate_first_pass(edit)


def ablate_all_every_step(task: SteeringTask) -> GenerateForm:
    return _generate_every_step(_ablate(task))


ADAPTER = Adapter(
    distribution="nnterp",
    ways=(
        Way(Intent.ACTADD_ALL, ITER_DOCS, actadd_all_every_step, Form.GENERATE),
        Way(Intent.CAA_GENERATED, ITER_DOCS, caa_generated_every_step, Form.GENERATE),
        Way(Intent.ORIGINAL_ZERO, ACCESSOR_DOCS, original_zero, Form.GENERATE),
        Way(Intent.ABLATE_ALL, ITER_DOCS, ablate_all_every_step, Form.GENERATE),
    ),
)
