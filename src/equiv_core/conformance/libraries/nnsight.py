"""nnsight (0.6.3, 0.7.0, 0.8.1): the intents written with the ``for step in tracer.iter[...]`` loop form, the way
nnsight's docs write multi-token generation ("Multiple Token Generation": nnsight.net/notebooks/features/
multiple_token/; ``tracer.iter`` in nnsight/intervention/tracing/iterator.py@v0.8.1).

The model is wrapped as each release documents: ``TransformersModel(model, tokenizer=..., task="text-generation")``
from 0.8 (``LanguageModel`` warns deprecated there), ``LanguageModel(model, tokenizer=...)`` before. Every loop is
bounded (``iter[:N]``): in 0.8 code after an unbounded ``iter[:]`` never runs (shared NOTES), so ``tracer.result``
could not be read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from nnsight import LanguageModel

from equiv_core.conformance.adapter import Adapter, Form, Way
from equiv_core.conformance.intents import Intent
from equiv_core.conformance.vectors import SteeringTask
from equiv_core.models.architecture import find_decoder_layers

try:  # 0.8: the documented wrapper of a loaded Hugging Face model
    from nnsight import TransformersModel as _Wrapper
except ImportError:  # 0.6, 0.7
    _Wrapper = LanguageModel

DOCS = "https://nnsight.net/notebooks/features/multiple_token/"
GenerateForm = Callable[..., Any]


def _blocks(lm: Any, model: torch.nn.Module) -> Any:
    """The decoder blocks of ``lm`` (an nnsight wrapper of ``model``) as envoys: ``lm.model.layers`` or
    ``lm.transformer.h``."""
    path, _ = find_decoder_layers(model)
    envoys = lm
    for name in path.split("."):
        envoys = getattr(envoys, name)
    return envoys


def _generate(task: SteeringTask, edit: Callable[[Any, int], None], steps: int | None) -> GenerateForm:
    """A generate-form function: one invoke, the edit inside ``for step in tracer.iter[:steps]`` (all the new
    tokens when ``steps`` is None), then ``tracer.result``."""

    def steer(model: Any, tokenizer: Any, input_ids: Any, attention_mask: Any, new: int, kwargs: Any) -> Any:
        lm = (
            _Wrapper(model, tokenizer=tokenizer)
            if _Wrapper is LanguageModel
            else _Wrapper(model, tokenizer=tokenizer, task="text-generation")
        )
        blocks = _blocks(lm, model)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        with lm.generate(max_new_tokens=new, **kwargs) as tracer:
            with tracer.invoke(inputs):
                for step in tracer.iter[: new if steps is None else steps]:
                    edit(blocks, step)
                ids = tracer.result.save()
        return ids

    return steer


def actadd_all(task: SteeringTask) -> GenerateForm:
    assert task.vectors is not None
    layer, added = task.layers[0], task.scale * task.vectors[0]

    def edit(blocks: Any, _step: int) -> None:
        blocks[layer].output[:] += added

    return _generate(task, edit, None)


def caa_generated(task: SteeringTask) -> GenerateForm:
    """``h[:, -1] += v`` at every step: the last prompt position at the prefill, then the one position each decode
    pass computes (with the KV cache, -1 is the newest token)."""
    assert task.vectors is not None
    layer, added = task.layers[0], task.scale * task.vectors[0]

    def edit(blocks: Any, _step: int) -> None:
        blocks[layer].output[:, -1] += added

    return _generate(task, edit, None)


def original_zero(task: SteeringTask) -> GenerateForm:
    layer = task.layers[0]

    def edit(blocks: Any, _step: int) -> None:
        blocks[layer].output[:, -1] = 0.0

    return _generate(task, edit, 1)


def ablate_all(task: SteeringTask) -> GenerateForm:
    assert task.vectors is not None
    directions = list(zip(task.layers, task.directions, strict=True))

    def edit(blocks: Any, _step: int) -> None:
        for layer, direction in directions:  # ascending: nnsight visits blocks in execution order
            hidden = blocks[layer].output
            blocks[layer].output[:] = hidden - (hidden @ direction).unsqueeze(-1) * direction

    return _generate(task, edit, None)


ADAPTER = Adapter(
    distribution="nnsight",
    ways=(
        Way(Intent.ACTADD_ALL, DOCS, actadd_all, Form.GENERATE),
        Way(Intent.CAA_GENERATED, DOCS, caa_generated, Form.GENERATE),
        Way(Intent.ORIGINAL_ZERO, DOCS, original_zero, Form.GENERATE),
        Way(Intent.ABLATE_ALL, DOCS, ablate_all, Form.GENERATE),
    ),
)
