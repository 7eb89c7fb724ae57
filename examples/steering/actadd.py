"""What researchers' steering code shares: the decoder blocks of a Hugging Face model, and an ActAdd steering vector.

The vector is the single-vector form of activation addition (Turner et al. 2023, arXiv:2308.10248): the residual
stream after block ``layer`` on "I love this" minus the same on "I hate this", at each prompt's last token, times 4,
which is what ``equiv check --recipe actadd-all`` means by its intent (README, "Check your own steering").
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

LOVE, HATE, SCALE = "I love this", "I hate this", 4.0


def layers_path(model: nn.Module) -> str:
    """Where the decoder blocks are: ``transformer.h`` (GPT-2) or ``model.layers`` (Llama, SmolLM2)."""
    return "transformer.h" if hasattr(model, "transformer") else "model.layers"


def blocks(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks, in order."""
    owner: Any = model
    for name in layers_path(model).split("."):
        owner = getattr(owner, name)
    return owner  # type: ignore[no-any-return]


def block_envoys(lm: Any, model: nn.Module) -> Any:
    """The decoder blocks of ``lm``, an nnsight wrapper of ``model``, as nnsight envoys (``lm.model.layers``)."""
    envoys = lm
    for name in layers_path(model).split("."):
        envoys = getattr(envoys, name)
    return envoys


def hidden(output: Any) -> torch.Tensor:
    """The hidden states [batch, seq, hidden] of a block's output (a tensor, or a tuple in older transformers)."""
    return output[0] if isinstance(output, tuple) else output


def with_hidden(output: Any, new: torch.Tensor) -> Any:
    return (new, *output[1:]) if isinstance(output, tuple) else new


def love_hate(model: nn.Module, tokenizer: Any, layer: int = 1) -> torch.Tensor:
    """SCALE x (residual after block ``layer`` on LOVE - on HATE), at the last token: [hidden], the model's dtype."""

    def last_token(prompt: str) -> torch.Tensor:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids.to(model.device)
        kept: list[torch.Tensor] = []
        handle = blocks(model)[layer].register_forward_hook(lambda _m, _a, out: kept.append(hidden(out)[0, -1]))
        try:
            with torch.no_grad():
                model(input_ids=ids, use_cache=False)
        finally:
            handle.remove()
        return kept[0].float()

    difference = last_token(LOVE) - last_token(HATE)
    return (SCALE * difference.to(model.dtype)).detach()
