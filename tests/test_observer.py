"""The block observer: an unsteered generation shows no change at all, an edit shows exactly where it was made
(not where it propagates), edits inside a block count as that block's, and three broken observers are caught."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import torch
from torch import nn

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.steering import generation_kwargs
from equiv_core.models.architecture import find_decoder_layers, hidden_states_of, with_hidden_states
from equiv_core.models.inputs import encode_prompts
from equiv_core.observe import observer as observer_module
from equiv_core.observe.hooks import ModelState, suspended_hooks
from equiv_core.observe.observer import BlockObserver, Change, Observation

PROMPTS = ("The weather today is", "Hi")  # a padded batch: row 1 has pad columns in front (left padding)
NEW_TOKENS = 4


def _observe(
    context: SteeringContext, steering: Callable[[nn.Module], Any] | None = None, use_cache: bool = True
) -> Observation:
    """Generate NEW_TOKENS for PROMPTS under ``steering`` (a context manager factory), observed."""
    model, tokenizer = context.loaded.model, context.loaded.tokenizer
    batch = encode_prompts(tokenizer, PROMPTS, context.device, "left")
    observer = BlockObserver(model, batch.input_ids[:1, :2])
    kwargs = generation_kwargs(NEW_TOKENS, tokenizer.pad_token_id, use_cache)
    with steering(model) if steering else _nothing():
        with observer.watching(), torch.no_grad():
            model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **kwargs)
        return observer.observation()  # with the steering's hooks still registered: the replay must not run them


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _adding_at(layer: int, column: int | None, module: Callable[[nn.Module], nn.Module] | None = None) -> Any:
    """A steering that adds 1.0 to block ``layer``'s output (or to ``module(block)``'s) at pass-relative ``column``
    (None: every column) of every pass."""

    @contextmanager
    def steer(model: nn.Module) -> Iterator[None]:
        block = find_decoder_layers(model)[1][layer]
        target = module(block) if module is not None else block

        def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
            hidden = hidden_states_of(output).clone()
            if column is None:
                hidden += 1.0
            else:
                hidden[:, column] += 1.0
            return with_hidden_states(output, hidden)

        handle = target.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    return steer


def _attention_output(block: nn.Module) -> nn.Module:
    return block.self_attn.o_proj if hasattr(block, "self_attn") else block.attn.c_proj


def _padded(context: SteeringContext) -> int:
    return encode_prompts(context.loaded.tokenizer, PROMPTS, context.device, "left").padded_length


def unsteered_is_empty(context: SteeringContext) -> bool:
    observation = _observe(context)
    return observation.changes == frozenset() and observation.largest == 0.0


def edit_is_observed_where_made(context: SteeringContext) -> bool:
    """The last column of every pass at layer 0, in both rows: exactly those cells, nothing at layer 1."""
    observation = _observe(context, _adding_at(0, -1))
    padded = _padded(context)
    expected = {Change(step, 0, padded - 1 + step, row) for step in range(NEW_TOKENS) for row in (0, 1)}
    return observation.changes == expected


def test_an_unsteered_generation_shows_no_change_at_all(tiny_context: SteeringContext) -> None:
    assert unsteered_is_empty(tiny_context)


def test_an_unsteered_generation_without_the_kv_cache_shows_no_change(tiny_context: SteeringContext) -> None:
    observation = _observe(tiny_context, use_cache=False)
    assert observation.changes == frozenset()
    assert [shape.length for shape in observation.passes if shape.layer == 0] == [
        _padded(tiny_context) + step for step in range(NEW_TOKENS)
    ]


def test_an_edit_is_observed_exactly_where_it_was_made_and_not_where_it_propagates(
    tiny_context: SteeringContext,
) -> None:
    assert edit_is_observed_where_made(tiny_context)


def test_an_edit_inside_a_block_is_a_change_of_that_block(tiny_context: SteeringContext) -> None:
    observation = _observe(tiny_context, _adding_at(1, None, _attention_output))
    assert {change.layer for change in observation.changes} == {1}
    assert (
        len({(change.step, change.column) for change in observation.changes}) == _padded(tiny_context) + NEW_TOKENS - 1
    )


def test_a_hook_left_registered_does_not_hide_its_edit_from_the_replay(tiny_context: SteeringContext) -> None:
    model = tiny_context.loaded.model
    block = find_decoder_layers(model)[1][1]
    handle = _attention_output(block).register_forward_hook(lambda _m, _a, out: out + 1.0)
    try:
        observation = _observe(tiny_context)
    finally:
        handle.remove()
    assert {change.layer for change in observation.changes} == {1}


def test_the_model_logits_are_kept_per_pass(tiny_context: SteeringContext) -> None:
    observation = _observe(tiny_context)
    assert len(observation.step_logits) == NEW_TOKENS
    assert observation.step_logits[0].shape == (2, tiny_context.loaded.model.config.vocab_size)


def test_the_last_blocks_output_is_read_where_the_final_norm_receives_it(tiny_context: SteeringContext) -> None:
    assert _observe(tiny_context).receiver in ("transformer.ln_f's input", "model.norm's input")


def test_suspended_hooks_are_back_afterwards_with_valid_handles() -> None:
    module = nn.Linear(2, 2)
    calls: list[int] = []
    handle = module.register_forward_hook(lambda *_: calls.append(1))
    with suspended_hooks(module):
        module(torch.zeros(1, 2))
    module(torch.zeros(1, 2))
    handle.remove()
    module(torch.zeros(1, 2))
    assert calls == [1]


def test_model_state_names_a_hook_and_a_swapped_module_left_behind() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))
    before = ModelState.of(model)
    model[0].register_forward_pre_hook(lambda *_: None)
    model[1] = nn.Linear(2, 2)
    assert ModelState.of(model).left_behind(before) == [
        "1 forward pre-hook left registered on 0",
        "module 1 was replaced and not put back",
    ]


# Mutation tests: each mutant is an observer broken in one way the issue names; the property tests above must
# catch it (the property is False with the mutant in place).


def _replay_through_the_hooks(self: BlockObserver, layer: int, call: Any) -> torch.Tensor:
    """Mutant: replay the block as it is called, user hooks and all (a forward hook sees the edited output)."""
    args, kwargs = call.replay_arguments()
    with torch.no_grad():
        return hidden_states_of(self.blocks[layer](*args, **kwargs))


def test_mutant_an_observer_that_misses_edits_is_caught(
    tiny_context: SteeringContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(BlockObserver, "_replay", _replay_through_the_hooks)
    assert not edit_is_observed_where_made(tiny_context)


def test_mutant_an_observer_that_attributes_propagation_to_later_layers_is_caught(
    tiny_context: SteeringContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = BlockObserver._replay
    clean: dict[int, torch.Tensor] = {}

    def replay_on_the_clean_stream(self: BlockObserver, layer: int, call: Any) -> torch.Tensor:
        """Mutant: feed block L+1 the replayed (unedited) output of block L, not what it received."""
        if layer > 0 and call.hidden.shape == clean.get(layer - 1, call.hidden).shape:
            call = observer_module._Call(
                (clean[layer - 1], *call.args[1:]),
                call.kwargs,
                clean[layer - 1],
                call.offset,
                call.cache_slot,
                call.cache_before,
            )
        clean[layer] = original(self, layer, call)
        return clean[layer]

    monkeypatch.setattr(BlockObserver, "_replay", replay_on_the_clean_stream)
    assert not edit_is_observed_where_made(tiny_context)


def test_mutant_an_observer_that_replays_without_the_attention_mask_reports_touches_on_an_unsteered_run(
    tiny_context: SteeringContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = observer_module._Call.replay_arguments

    def without_mask(self: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Mutant: the block's attention mask (GPT-2: third argument; Llama: keyword) is not passed on: the padded
        row attends to its pad columns in the replay."""
        args, kwargs = original(self)
        if "attention_mask" in kwargs:
            kwargs["attention_mask"] = None
        elif len(args) > 2:
            args = (*args[:2], None, *args[3:])
        return args, kwargs

    monkeypatch.setattr(observer_module._Call, "replay_arguments", without_mask)
    assert not unsteered_is_empty(tiny_context)


def test_passes_before_the_generation_are_left_out_even_one_stopped_early(tiny_context: SteeringContext) -> None:
    """A function that reads its vector first (a whole forward pass, then one stopped after block 0) and then
    generates: the generation's passes are the last ones, and they alone are judged."""
    model, tokenizer = tiny_context.loaded.model, tiny_context.loaded.tokenizer
    batch = encode_prompts(tokenizer, PROMPTS, tiny_context.device, "left")
    observer = BlockObserver(model, batch.input_ids[:1, :2])
    blocks = find_decoder_layers(model)[1]

    def stop(_module: nn.Module, _args: Any, _output: Any) -> None:
        raise StopIteration

    kwargs = generation_kwargs(NEW_TOKENS, tokenizer.pad_token_id, True)
    with observer.watching(), torch.no_grad():
        model(input_ids=batch.input_ids[:1, :3], use_cache=False)
        handle = blocks[0].register_forward_hook(stop)
        with pytest.raises(StopIteration):
            model(input_ids=batch.input_ids[:1, :3], use_cache=False)
        handle.remove()
        model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **kwargs)
    observation = observer.observation(NEW_TOKENS)
    assert observation.setup_passes == 2 and observation.changes == frozenset()
    assert [shape.length for shape in observation.passes if shape.layer == 0] == [batch.padded_length, 1, 1, 1]
