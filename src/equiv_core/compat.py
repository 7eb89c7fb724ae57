"""The one module that knows how nnsight's API differs across versions.

Experiments and benchmarks call :class:`NnsightSteering` and never nnsight directly. Supported:
0.5.x (``LanguageModel``, ``with tracer.iter[...]:`` blocks), 0.6.x and 0.7.x (``LanguageModel``,
``for step in tracer.iter[...]``) and 0.8.x (``TransformersModel``, same loop form). Every generation
reads ids with ``tracer.result`` *after* the iter loop and uses a bounded loop ``iter[:N]`` with
``min_new_tokens=N``: the patterns that gave correct steered ids on 0.6.3, 0.7.0 and 0.8.1
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
MIN_SUPPORTED = Version("0.5.0")
# 0.5 has only the with-block form of iter (the body runs once per step); 0.6 added the for-loop form and
# deprecated the with-block; 0.8 replaced LanguageModel with TransformersModel.
LOOP_ITER = Version("0.6.0") <= NNSIGHT_VERSION
TRANSFORMERS_MODEL = Version("0.8.0") <= NNSIGHT_VERSION


# Known-bad ways to write a step-0 edit: both read ``tracer.result`` before the step selector. The right
# behaviour is an error; nnsight 0.8.1 returns *unsteered* ids without one for the with-block form.
PITFALLS = {
    "result_before_iter_loop": "tracer.result read before `for step in tracer.iter[0]:`",
    "result_before_with_iter": "tracer.result read before the deprecated `with tracer.iter[0]:` block",
}


class UnsupportedNnsightVersion(RuntimeError):
    """The installed nnsight cannot be used at all; the message says why."""


class NotExpressible(RuntimeError):
    """The installed nnsight cannot express one steering arm; the finding that needs it is "not expressible"."""


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
    if TRANSFORMERS_MODEL:
        from nnsight import TransformersModel

        return TransformersModel(model, tokenizer=tokenizer, task="text-generation")
    from nnsight import LanguageModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return LanguageModel(model, tokenizer=tokenizer)


class NnsightSteering:
    """Steered generation and forward passes through nnsight, in the vocabulary of :mod:`equiv_core.steering`."""

    def __init__(
        self, wrapped: Any, layers_path: str, block_output_form: BlockOutputForm, pad_token_id: int | None = None
    ) -> None:
        """Steer through ``wrapped`` (any nnsight model; :meth:`for_model` wraps a Hugging Face one), whose
        decoder blocks are at ``layers_path`` and return a ``block_output_form``."""
        self.wrapped = wrapped
        self.layers_path = layers_path
        self.block_output_form = block_output_form
        self.pad_token_id = pad_token_id
        self.version = str(NNSIGHT_VERSION)

    @classmethod
    def for_model(
        cls,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        layers_path: str,
        block_output_form: BlockOutputForm,
    ) -> NnsightSteering:
        """Wrap a loaded Hugging Face model with the class this nnsight version recommends (:func:`wrap`)."""
        return cls(wrap(model, tokenizer), layers_path, block_output_form, tokenizer.pad_token_id)

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
                        self._edit_step(block, edit, shapes, errors, catch_index_errors)
                    elif LOOP_ITER:
                        steps = slice(0, 1) if when == "step0" else slice(0, max_new_tokens)
                        for _step in tracer.iter[steps]:
                            self._edit_step(block, edit, shapes, errors, catch_index_errors)
                    else:
                        steps = slice(0, 1) if when == "step0" else slice(0, max_new_tokens)
                        with tracer.iter[steps]:
                            self._edit_step(block, edit, shapes, errors, catch_index_errors)
                    result = tracer.result.save()
        return record_from_output(arm or when, input_ids, result.sequences, result.logits, tuple(shapes), tuple(errors))

    def _edit_step(
        self, block: Any, edit: Edit, shapes: list[Any], errors: list[Any], catch_index_errors: bool
    ) -> None:
        """One firing of the intervention: record the shape seen, apply the edit (or record why not)."""
        hidden = self._hidden(block)
        shapes.append(tuple(hidden.shape))
        try:
            edit.apply(hidden)
            errors.append(None)
        except IndexError as error:
            if not catch_index_errors:
                raise
            errors.append(str(error))

    def pitfall_generate(self, pitfall: str, input_ids: torch.Tensor, max_new_tokens: int, edit: Edit) -> Any:
        """Generate with a known-bad pattern (see :data:`PITFALLS`); returns the generated ids or raises.

        Used by the version audit to see which releases reject a wrong pattern and which silently return
        unsteered ids. Never used to produce a result anyone relies on.
        """
        if pitfall not in PITFALLS:
            raise ValueError(f"unknown pitfall {pitfall!r}; valid: {', '.join(PITFALLS)}")
        if pitfall == "result_before_iter_loop" and not LOOP_ITER:
            raise NotExpressible(f"nnsight {NNSIGHT_VERSION} has no for-loop form of iter")
        kwargs = generation_kwargs(max_new_tokens, self.pad_token_id, True)
        inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        block = self._block(edit.layer)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the with-block form is deprecated from 0.6: that is the point
            with torch.no_grad():
                with self.wrapped.generate(**kwargs) as tracer:
                    with tracer.invoke(inputs):
                        result = tracer.result.save()
                        if pitfall == "result_before_iter_loop":
                            for _step in tracer.iter[0]:
                                edit.apply(self._hidden(block))
                        else:
                            with tracer.iter[0]:
                                edit.apply(self._hidden(block))
        return result.sequences[0, input_ids.shape[1] :].tolist()

    def literal_output0_edit(self, input_ids: torch.Tensor, layer: int, index: int) -> dict[str, Any]:
        """What the original study's literal ``block.output[0][index] = 0.0`` zeroes on this version.

        On a tuple-returning block ``output[0]`` is the [batch, seq, hidden] tensor, so ``[index]`` selects a
        *batch row* (all positions); on a tensor-returning block it is batch row 0, so ``[index]`` is a position.
        Returns the (batch, position) pairs that became zero, or the error the edit raised.
        """
        block = self._block(layer)
        try:
            with torch.no_grad():
                with self.wrapped.trace(input_ids):
                    block.output[0][index] = 0.0
                    after = self._hidden(block).clone().save()
        except Exception as error:  # noqa: BLE001 - the error itself is the finding
            return {"index": index, "zeroed": None, "error": f"{type(error).__name__}: {error}"}
        hidden = torch.as_tensor(after)
        zero_rows = (hidden == 0).all(dim=-1).nonzero().tolist()
        return {"index": index, "zeroed": [[int(b), int(p)] for b, p in zero_rows], "error": None}

    def forward_logits(self, input_ids: torch.Tensor, edit: Edit) -> torch.Tensor:
        """Logits [seq, vocab] (float32, CPU) of one full forward pass without cache, with ``edit`` applied."""
        block = self._block(edit.layer)
        with torch.no_grad():
            with self.wrapped.trace(input_ids, use_cache=False):
                edit.apply(self._hidden(block))
                logits = self.wrapped.output.logits.save()
        return torch.as_tensor(logits)[0].detach().float().cpu()
