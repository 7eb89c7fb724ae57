"""The steering context: how raw logits become the token greedy generation picks."""

from __future__ import annotations

import torch

from equiv_core.arms.context import SteeringContext


def test_greedy_choice_masks_eos_as_min_new_tokens_does(tiny_context: SteeringContext) -> None:
    """Generation runs with min_new_tokens = new tokens, so EOS can never win; a prediction must agree."""
    [eos] = tiny_context.eos_token_ids()
    vocab = tiny_context.loaded.model.config.vocab_size
    logits = torch.zeros(2, vocab)
    logits[0, eos], logits[0, 7] = 10.0, 5.0  # EOS is the argmax: the second best must be chosen
    logits[1, 9] = 3.0  # EOS not involved
    assert tiny_context.greedy_choice(logits) == (7, 9)
    assert int(logits[0].argmax()) == eos  # the input is left as it was
