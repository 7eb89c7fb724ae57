"""nnsight's steering arms: the one place experiments and benchmarks go through to steer with nnsight.

Experiments and benchmarks call :class:`NnsightSteering` and never nnsight directly; what differs between releases
is read once in :mod:`equiv_core.arms.nnsight_release`. Supported: 0.4.x (``LanguageModel``, a graph API: its arms
are in :mod:`equiv_core.arms.nnsight_graph`), 0.5.x (``LanguageModel``, ``with tracer.iter[...]:`` blocks), 0.6.x
and 0.7.x (``LanguageModel``, ``for step in tracer.iter[...]``) and 0.8.x (``TransformersModel``, same loop form).
From 0.5, every generation reads ids with ``tracer.result`` (before 0.5.8: ``generator.output``) *after* the iter
loop and uses a bounded loop ``iter[:N]`` with ``min_new_tokens=N``: the patterns that gave correct steered ids on
0.6.3, 0.7.0 and 0.8.1 (an unbounded ``iter[:]`` never returns on 0.8, and reading ``tracer.result`` first can yield
*unsteered* ids without an error). Results are still checked against a raw hook by the caller, never trusted as is.

What an arm records inside a trace (the shape each firing saw, the edits it made) goes into containers made
*outside* the trace, which the trace's code only appends to: a container made inside a trace must be saved to
outlive it, and before 0.5.13 a saved list made inside a trace within a function did not come back (the probe of a
step window recorded no step although the edits landed at steps 1 and 2; release sweep of 2026-12-07), so the arms
drive every release from 0.5.1 the same way.
"""

from __future__ import annotations

import operator
import warnings
from functools import partial
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from equiv_core.arms.model_work import ModelWork, tensor_key
from equiv_core.arms.nnsight_graph import graph_generate, graph_generate_spec
from equiv_core.arms.nnsight_release import (
    GRAPH_API,
    LOOP_ITER,
    MIN_SUPPORTED,
    NNSIGHT_VERSION,
    TRACE_OPTIONS,
    TRACER_RESULT,
    TRANSFORMERS_MODEL,
    SpecStyle,
)
from equiv_core.arms.prefix import prefix_kwargs
from equiv_core.arms.resolved import ResolvedSpec
from equiv_core.arms.spec_edits import logged_edits, pass_offset, row_edits
from equiv_core.arms.steering import (
    Edit,
    GenerationRecord,
    IndexFault,
    PassCounter,
    PassShape,
    SpecGeneration,
    Touch,
    When,
    apply_op,
    check_when,
    generation_kwargs,
    record_from_output,
    records_from_output,
    seed_sampling,
)
from equiv_core.models.architecture import BlockOutputForm, check_residual_shape
from equiv_core.models.sites import SiteModule


class UnsupportedNnsightVersion(RuntimeError):
    """The installed nnsight cannot be used at all; the message says why."""


def generated_output(wrapped: Any, tracer: Any) -> Any:
    """Inside a generation trace: the saved ``generate`` output (``tracer.result``; ``generator.output`` before
    nnsight 0.5.8, see :data:`TRACER_RESULT`), read after every step selector that should steer it."""
    return tracer.result.save() if TRACER_RESULT else wrapped.generator.output.save()


def hidden_of_envoy(block: Any, form: BlockOutputForm) -> Any:
    """Inside a trace: the [batch, seq, hidden] tensor of a block envoy's output, in either output form.

    On a tuple-returning block this is ``output[0]``; on a tensor-returning one it is ``output`` itself, where
    ``output[0]`` would be batch row 0, the silent trap of the original study's code. From nnsight 0.5 (real
    tensors in the trace) a tensor of another rank raises :class:`UnsupportedArchitecture`; on 0.4 (a proxy)
    :func:`equiv_core.models.architecture.describe` has checked the shape once, at load.
    """
    output = block.output
    hidden = output[0] if form == "tuple" else output
    if not GRAPH_API:
        check_residual_shape(tuple(hidden.shape))
    return hidden


def check_supported() -> None:
    """Raise :class:`UnsupportedNnsightVersion` (one line, with the reason) where the installed nnsight is older
    than :data:`MIN_SUPPORTED`."""
    if NNSIGHT_VERSION < MIN_SUPPORTED:
        raise UnsupportedNnsightVersion(
            f"nnsight {NNSIGHT_VERSION} is not supported (need >= {MIN_SUPPORTED}: the arms are written for the "
            "LanguageModel tracing API of 0.4 and later)"
        )


def wrap(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> Any:
    """Wrap an already loaded Hugging Face model with the class this nnsight version recommends; raises
    :class:`UnsupportedNnsightVersion` for a release older than :data:`MIN_SUPPORTED`."""
    check_supported()
    if TRANSFORMERS_MODEL:
        from nnsight import TransformersModel

        return TransformersModel(model, tokenizer=tokenizer, task="text-generation")
    from nnsight import LanguageModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return LanguageModel(model, tokenizer=tokenizer)


class NnsightSteering:
    """Steered generation and forward passes through nnsight, in the vocabulary of :mod:`equiv_core.arms.steering`."""

    def __init__(
        self,
        model: torch.nn.Module,
        wrapped: Any,
        layers_path: str,
        block_output_form: BlockOutputForm,
        pad_token_id: int | None = None,
        work: ModelWork | None = None,
    ) -> None:
        """Steer ``model`` through ``wrapped``, its nnsight wrapper (:meth:`for_model` wraps a Hugging Face
        model); its decoder blocks are at ``layers_path`` and return a ``block_output_form``. ``work`` times every
        generation and forward pass (and shares identical ones while ``work.shared()``)."""
        self.work = work or ModelWork()
        self.model = model
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
        return cls(model, wrap(model, tokenizer), layers_path, block_output_form, tokenizer.pad_token_id)

    def block(self, layer: int) -> Any:
        """The envoy of decoder block ``layer`` (e.g. ``model.transformer.h[layer]``)."""
        return operator.attrgetter(self.layers_path)(self.wrapped)[layer]

    def hidden(self, block: Any) -> Any:
        """Inside a trace: the [batch, seq, hidden] tensor of ``block``'s output (see :func:`hidden_of_envoy`)."""
        return hidden_of_envoy(block, self.block_output_form)

    def site_envoy(self, block: Any, site: SiteModule) -> Any:
        """The envoy of ``site``'s module under ``block``'s envoy (the block itself for a block site)."""
        return operator.attrgetter(site.path)(block) if site.path else block

    def site_tensor(self, block: Any, site: SiteModule) -> Any:
        """Inside a trace (nnsight >= 0.5): the [batch, seq, width] tensor of ``site`` under ``block``'s envoy: the
        envoy's ``.input`` (its first argument) for an input site (edited in a copy assigned back to ``.input``),
        else its ``.output`` (the first element of a tuple, edited in place); a block's output exactly as
        :meth:`hidden` reads it."""
        if site.site.is_default:
            return self.hidden(block)
        envoy = self.site_envoy(block, site)
        if site.reads_input:
            tensor = envoy.input
        else:
            output = envoy.output
            tensor = output[0] if site.output_is_tuple else output
        check_residual_shape(tuple(tensor.shape))
        return tensor

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
        key = (
            "nnsight.generate",
            tensor_key(input_ids),
            max_new_tokens,
            edit,
            when,
            use_cache,
            catch_index_errors,
            arm,
        )
        return self.work.run(
            key,
            partial(self._generate, input_ids, max_new_tokens, edit, when, use_cache, catch_index_errors, arm),
        )

    def _generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        edit: Edit,
        when: When,
        use_cache: bool,
        catch_index_errors: bool,
        arm: str | None,
    ) -> GenerationRecord:
        when = check_when(when)
        if GRAPH_API:
            return graph_generate(
                self, input_ids, max_new_tokens, edit, when, use_cache, catch_index_errors, arm or when
            )
        kwargs = generation_kwargs(max_new_tokens, self.pad_token_id, use_cache)
        inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        block = self.block(edit.layer)
        shapes: list[tuple[int, ...]] = []  # made outside the trace, appended to inside it (module docstring)
        errors: list[str | None] = []
        # nnsight re-executes the source of each `with` block: keep one context manager per statement.
        with torch.no_grad():
            with self.wrapped.generate(**kwargs) as tracer:
                with tracer.invoke(inputs):
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
                    result = generated_output(self.wrapped, tracer)
        return record_from_output(arm or when, input_ids, result.sequences, result.logits, tuple(shapes), tuple(errors))

    def _edit_step(
        self, block: Any, edit: Edit, shapes: list[Any], errors: list[Any], catch_index_errors: bool
    ) -> None:
        """One firing of the intervention: record the shape seen, apply the edit (or record why not)."""
        hidden = self.hidden(block)
        shapes.append(tuple(hidden.shape))
        try:
            edit.apply(hidden)
            errors.append(None)
        except IndexError as error:
            if not catch_index_errors:
                raise
            errors.append(str(error))

    def generate_spec(self, resolved: ResolvedSpec, style: SpecStyle, per_invoke: bool = False) -> SpecGeneration:
        """Generation of ``resolved.new_tokens`` tokens for ``resolved.batch`` with the spec applied the way
        ``style`` writes it: in one batched invoke, or (``per_invoke``) one ``tracer.invoke`` per prompt, which
        nnsight pads and batches itself. Timed as model work, never shared (it may sample)."""
        return self.work.timed(partial(self._generate_spec, resolved, style, per_invoke))

    def _generate_spec(self, resolved: ResolvedSpec, style: SpecStyle, per_invoke: bool) -> SpecGeneration:
        """See :meth:`generate_spec`.

        Each firing translates every row's positions into columns of the pass it sees (with the KV cache the pass
        at step ``k >= 1`` holds only column ``L + k - 1``, ``L`` the padded prompt length), or, for ``indexing =
        literal``, uses the spec's integers as written. What was touched is recorded at the step the model really
        ran (a pass counter on the model), not the step this code believes it is at. With ``stop_at_eos``,
        nnsight 0.8 warns that the bounded step loop asked for steps the run did not make; that is expected here
        (the steps each row ran are recorded) and the warning is not passed on.
        """
        if GRAPH_API:
            return graph_generate_spec(self, resolved, style, per_invoke)
        batch = resolved.batch
        cached = style != "recompute"
        new_tokens = resolved.new_tokens
        kwargs = generation_kwargs(new_tokens, self.pad_token_id, cached, resolved.decoding)
        kwargs |= prefix_kwargs(resolved.prefix_cache, cached)
        blocks = [(layer, self.block(layer)) for layer in resolved.layers]
        window = range(new_tokens) if style == "recompute" else resolved.steps.fired(new_tokens)
        selector = slice(window.start, window.stop)
        literal = style == "iter" and resolved.spec.indexing == "literal"
        prompt_pass = style == "plain" or (style == "iter" and resolved.steps.kind == "prompt-pass")
        invocations: list[tuple[tuple[int, ...], dict[str, torch.Tensor]]] = []
        if per_invoke:
            for row in range(batch.size):
                ids = torch.tensor([batch.row_ids(row)], device=batch.input_ids.device)
                invocations.append(((row,), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}))
        else:
            invocations = [
                (tuple(range(batch.size)), {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask})
            ]
        # One invoke per prompt, or a step loop that generation may end early (nnsight 0.8 then skips the code after
        # the loop): the result is read in an empty invoke of its own.
        separate_result = per_invoke or resolved.decoding.stop_at_eos
        # Made outside the trace, appended to inside it (module docstring).
        log: list[Touch | IndexFault] = []  # per edit, at the step the model really ran (spec_edits.row_edits)
        passes: list[PassShape] = []  # per block firing: the positions its pass held
        firings: list[list[int]] = [[] for _ in invocations]  # nnsight 0.5: per invoke, the steps its block ran at
        counter = PassCounter(self.model)
        tokenizer = getattr(self.wrapped, "tokenizer", None)
        padding_side = getattr(tokenizer, "padding_side", None)
        seed_sampling(resolved.decoding)
        try:
            if tokenizer is not None:
                tokenizer.padding_side = batch.padding  # nnsight pads per-invoke inputs with the tokenizer
            with warnings.catch_warnings():
                if resolved.decoding.stop_at_eos:
                    warnings.filterwarnings("ignore", message=".*was never reached.*", category=UserWarning)
                with torch.no_grad():
                    with self.wrapped.generate(**kwargs) as tracer:
                        for invoked, (rows, inputs) in enumerate(invocations):
                            with tracer.invoke(inputs):
                                fire = partial(self._spec_firing, blocks, resolved, rows, cached, literal, counter)
                                if prompt_pass:
                                    fire(believed_step=0, log=log, passes=passes)
                                elif LOOP_ITER:
                                    for step in tracer.iter[selector]:
                                        fire(believed_step=int(step), log=log, passes=passes)
                                else:  # nnsight 0.5: the with-block body runs once per step, no step variable
                                    with tracer.iter[selector]:
                                        believed = window.start + len(firings[invoked])
                                        firings[invoked].append(believed)
                                        fire(believed_step=believed, log=log, passes=passes)
                                if not separate_result:
                                    result = generated_output(self.wrapped, tracer)
                        if separate_result:
                            with tracer.invoke():  # an empty invoke reads the whole batch's result
                                result = generated_output(self.wrapped, tracer)
        finally:
            counter.close()
            if tokenizer is not None:
                tokenizer.padding_side = padding_side
        eos = resolved.eos_ids if resolved.decoding.stop_at_eos else ()
        prompts = tuple(batch.row_ids(row) for row in range(batch.size))
        name = f"{style}_per_invoke" if per_invoke else style
        records = records_from_output(name, prompts, batch.padded_length, result.sequences, result.logits, eos)
        touched, faults = logged_edits(log)
        return SpecGeneration(records, touched, faults, tuple(passes))

    def _spec_firing(
        self,
        blocks: list[tuple[int, Any]],
        resolved: ResolvedSpec,
        rows: tuple[int, ...],
        cached: bool,
        literal: bool,
        counter: PassCounter,
        believed_step: int,
        log: list[Touch | IndexFault],
        passes: list[PassShape],
    ) -> None:
        """One firing of a spec arm: every steered block of this pass, in execution order, for ``rows`` (the
        batch rows this invoke holds, in its order). Appends each edit to ``log`` and each block's pass length to
        ``passes``, at the step the model really ran."""
        padded_length = resolved.batch.padded_length
        for layer, block in blocks:
            site = resolved.site_for(layer)
            hidden = self.site_tensor(block, site)  # [len(rows), positions in this pass, width]
            # Read the pass counter only after the block's output is in hand: nnsight runs this code ahead of
            # the model until it needs a module's value, so an earlier read would see the previous pass.
            actual_step = counter.step
            length = int(hidden.shape[1])
            passes.append(PassShape(actual_step, layer, length))
            prefix = resolved.batch.prefix_length
            believed_offset = pass_offset(believed_step, padded_length, cached, prefix)
            actual_offset = pass_offset(actual_step, padded_length, cached, prefix)
            # A module's input inside the block is edited in a copy that replaces it: the tensor object it receives
            # may be another module's too (Phi and GPT-J hand one normalised tensor to attention and MLP), which an
            # in-place write would edit as well. A block's input is the previous block's output, nobody else's: it
            # is edited in place, as the block output is (the observer then sees it as the previous block's change).
            replaced = site.reads_input and bool(site.path)
            target = hidden.clone() if replaced else hidden
            edited = False
            for slot, row in enumerate(rows):
                indices = row_edits(
                    resolved, row, layer, length, believed_offset, actual_offset, actual_step, literal, log
                )
                if not indices:
                    continue
                edited = True
                vector, scale = resolved.vector_for(layer), resolved.scale_for(layer)
                if site.columns is None:
                    target[slot, indices] = apply_op(resolved.op, scale, target[slot, indices], vector)
                else:  # a head site: only the heads' columns
                    columns = list(site.columns)
                    selected = target[slot, indices]
                    selected[:, columns] = apply_op(resolved.op, scale, selected[:, columns], vector)
                    target[slot, indices] = selected
            if replaced and edited:
                self.site_envoy(block, site).input = target

    def forward_logits(self, input_ids: torch.Tensor, edit: Edit) -> torch.Tensor:
        """Logits [seq, vocab] (float32, CPU) of one full forward pass without cache, with ``edit`` applied."""
        return self.work.run(
            ("nnsight.forward_logits", tensor_key(input_ids), edit), partial(self._forward_logits, input_ids, edit)
        )

    def _forward_logits(self, input_ids: torch.Tensor, edit: Edit) -> torch.Tensor:
        block = self.block(edit.layer)
        with torch.no_grad():
            with self.wrapped.trace(input_ids, use_cache=False, **TRACE_OPTIONS):
                edit.apply(self.hidden(block))
                logits = self.wrapped.output.logits.save()
        return torch.as_tensor(logits)[0].detach().float().cpu()
