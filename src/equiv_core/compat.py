"""The one module that knows how nnsight's API differs across versions.

Experiments and benchmarks call :class:`NnsightSteering` and never nnsight directly. Supported:
0.6.x, 0.7.x (``LanguageModel``, ``for step in tracer.iter[...]``) and 0.8.x (``TransformersModel``, same loop
form). Every generation reads ids with ``tracer.result`` *after* the iter loop and uses a bounded loop
``iter[:N]`` with ``min_new_tokens=N``: the patterns that gave correct steered ids on 0.6.3, 0.7.0 and 0.8.1
(an unbounded ``iter[:]`` never returns on 0.8, and reading ``tracer.result`` first can yield *unsteered*
ids without an error). Results are still checked against a raw hook by the caller, never trusted as is.
"""

from __future__ import annotations

import operator
import warnings
from typing import Any

import nnsight
import torch
from packaging.version import Version
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from equiv_core.architecture import BlockOutputForm
from equiv_core.steering import Edit, GenerationRecord, When, generation_kwargs, record_from_output

NNSIGHT_VERSION = Version(nnsight.__version__)
MIN_SUPPORTED = Version("0.6.0")


class UnsupportedNnsightVersion(RuntimeError):
    """The installed nnsight cannot express what was asked; the message says why."""


def _save(value: Any) -> Any:
    """Mark ``value`` to outlive the trace (``nnsight.save`` where it exists, else the ``.save()`` method)."""
    save = getattr(nnsight, "save", None)
    return save(value) if save is not None else value.save()


def hidden_of_envoy(block: Any, form: BlockOutputForm) -> Any:
    """Inside a trace: the [batch, seq, hidden] tensor of a block envoy's output, in either output form.

    On a tuple-returning block this is ``output[0]``; on a tensor-returning one it is ``output`` itself, where
    ``output[0]`` would be batch row 0, the silent trap of the original study's code.
    """
    output = block.output
    return output[0] if form == "tuple" else output


def wrap(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> Any:
    """Wrap an already loaded Hugging Face model with the class this nnsight version recommends."""
    if NNSIGHT_VERSION < MIN_SUPPORTED:
        raise UnsupportedNnsightVersion(f"nnsight {NNSIGHT_VERSION} is not supported (need >= {MIN_SUPPORTED})")
    if Version("0.8.0") <= NNSIGHT_VERSION:
        from nnsight import TransformersModel

        return TransformersModel(model, tokenizer=tokenizer, task="text-generation")
    from nnsight import LanguageModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return LanguageModel(model, tokenizer=tokenizer)


class NnsightSteering:
    """Steered generation and forward passes through nnsight, in the vocabulary of :mod:`equiv_core.steering`."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        layers_path: str,
        block_output_form: BlockOutputForm,
    ) -> None:
        self.wrapped = wrap(model, tokenizer)
        self.layers_path = layers_path
        self.block_output_form = block_output_form
        self.pad_token_id = tokenizer.pad_token_id
        self.version = str(NNSIGHT_VERSION)

    def _block(self, layer: int) -> Any:
        """The envoy of decoder block ``layer`` (e.g. ``model.transformer.h[layer]``)."""
        return operator.attrgetter(self.layers_path)(self.wrapped)[layer]

    def _hidden(self, block: Any) -> Any:
        return hidden_of_envoy(block, self.block_output_form)

    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        edit: Edit,
        when: When,
        use_cache: bool = True,
        catch_index_errors: bool = False,
        arm: str | None = None,
    ) -> GenerationRecord:
        """Greedy generation with ``edit`` applied ``when`` says, recording the shape seen at each edit.

        ``catch_index_errors`` records an out-of-range index per step instead of raising: the evidence that,
        with the cache, an absolute prompt position does not exist after step 0.
        """
        kwargs = generation_kwargs(max_new_tokens, self.pad_token_id, use_cache)
        inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        block = self._block(edit.layer)
        # nnsight re-executes the source of each `with` block: keep one context manager per statement.
        with torch.no_grad():
            with self.wrapped.generate(**kwargs) as tracer:
                with tracer.invoke(inputs):
                    shapes = _save([])
                    errors = _save([])
                    if when == "prompt":
                        hidden = self._hidden(block)
                        shapes.append(tuple(hidden.shape))
                        edit.apply(hidden)
                        errors.append(None)
                    else:
                        steps = slice(0, 1) if when == "step0" else slice(0, max_new_tokens)
                        for _step in tracer.iter[steps]:
                            hidden = self._hidden(block)
                            shapes.append(tuple(hidden.shape))
                            try:
                                edit.apply(hidden)
                                errors.append(None)
                            except IndexError as error:
                                if not catch_index_errors:
                                    raise
                                errors.append(str(error))
                    result = tracer.result.save()
        return record_from_output(arm or when, input_ids, result.sequences, result.logits, tuple(shapes), tuple(errors))

    def forward_logits(self, input_ids: torch.Tensor, edit: Edit) -> torch.Tensor:
        """Logits [seq, vocab] (float32, CPU) of one full forward pass without cache, with ``edit`` applied."""
        block = self._block(edit.layer)
        with torch.no_grad():
            with self.wrapped.trace(input_ids, use_cache=False):
                edit.apply(self._hidden(block))
                logits = self.wrapped.output.logits.save()
        return torch.as_tensor(logits)[0].detach().float().cpu()
