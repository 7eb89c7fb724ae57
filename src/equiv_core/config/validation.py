"""The one validator of indices and lengths, shared by ``equiv run``, ``equiv bench``, specs and the audit.

Each check raises :class:`UserInputError` with one line naming the valid range. Checks that need only the model's
shape run before loading where the shape is known (built-in models); the rest run right after loading, before
any generation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from equiv_core.config.catalog import ATTN_IMPLEMENTATIONS, DTYPE_NAMES
from equiv_core.support.errors import UserInputError

SEED_MAX = 2**32 - 1  # numpy's seed range; torch and random accept it too
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")  # owner/name, as the Hugging Face hub spells a repository id


def check_dtype(dtype: str) -> str:
    """``dtype`` if it is one of :data:`~equiv_core.config.catalog.DTYPE_NAMES`; else UserInputError naming them."""
    if dtype not in DTYPE_NAMES:
        raise UserInputError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPE_NAMES)}")
    return dtype


def check_attn_implementation(kernel: str | None) -> None:
    """None (the model's own kernel) or one of :data:`~equiv_core.config.catalog.ATTN_IMPLEMENTATIONS`; else
    UserInputError naming them."""
    if kernel is not None and kernel not in ATTN_IMPLEMENTATIONS:
        raise UserInputError(f"--attn-implementation {kernel!r}: valid: {', '.join(ATTN_IMPLEMENTATIONS)}")


def check_model_name(name: str, builtin: Iterable[str]) -> None:
    """A model is a built-in name, an existing local directory, or something shaped like a hub id (owner/name);
    anything else is refused before torch is even imported."""
    names = tuple(builtin)
    if name in names or Path(name).expanduser().is_dir() or HUB_ID.fullmatch(name):
        return
    raise UserInputError(
        f"unknown model {name!r}; valid: {', '.join(names)}, an existing local directory, "
        "or a hub id like openai-community/gpt2"
    )


def check_seed(seed: int) -> int:
    if not 0 <= seed <= SEED_MAX:
        raise UserInputError(f"seed {seed} out of range; valid: 0..{SEED_MAX}")
    return seed


def check_device_name(device: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (the spelling only: whether CUDA is here needs torch,
    :func:`equiv_core.models.load.resolve_device`)."""
    if device not in ("auto", "cpu", "cuda") and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise UserInputError(f"unknown device {device!r}; valid: auto, cpu, cuda, cuda:N")
    return device


def check_layer(layer: int, num_layers: int) -> int:
    """A Python-style layer index in [-num_layers, num_layers - 1], made absolute."""
    if not -num_layers <= layer < num_layers:
        raise UserInputError(f"layer {layer} out of range; valid: 0..{num_layers - 1} (or {-num_layers}..-1)")
    return layer % num_layers


def check_prompt_position(position: int, prompt_length: int) -> int:
    """A Python-style prompt position, made absolute."""
    if not -prompt_length <= position < prompt_length:
        raise UserInputError(
            f"position {position} out of range; valid: 0..{prompt_length - 1} (or {-prompt_length}..-1)"
        )
    return position % prompt_length


def check_new_tokens(new_tokens: int, flag: str = "max-new-tokens") -> int:
    if new_tokens < 1:
        raise UserInputError(f"{flag} must be >= 1, got {new_tokens}")
    return new_tokens


def check_new_tokens_fit(new_tokens: int, model: str, max_positions: int | None, flag: str = "max-new-tokens") -> None:
    """Before loading: ``new_tokens`` must leave room for the shortest prompt (2 tokens) in the model's context."""
    if max_positions is not None and new_tokens > max_positions - 2:
        raise UserInputError(
            f"{flag} {new_tokens} too large: valid 1..{max_positions - 2} on {model} ({max_positions} positions, "
            "of which the prompt takes at least 2)"
        )


def check_prompt(prompt: str) -> str:
    if not prompt.strip():
        raise UserInputError("prompt is empty; give a prompt of at least 2 tokens")
    return prompt


def check_prompt_length(prompt: str, prompt_length: int) -> None:
    if prompt_length < 2:
        raise UserInputError(f"prompt {prompt!r} is {prompt_length} token; need at least 2 tokens")


def check_fits_context(
    prompt_length: int, new_tokens: int, max_positions: int | None, flag: str = "max-new-tokens"
) -> None:
    """Prompt plus generated tokens must fit the model's positions (absolute-position models index past it)."""
    if max_positions is None:
        return
    if prompt_length >= max_positions:
        raise UserInputError(
            f"prompt is {prompt_length} tokens, too long for this model's context of {max_positions} positions; "
            f"valid: at most {max_positions - 1} tokens, leaving room for 1 new token"
        )
    if prompt_length + new_tokens > max_positions:
        raise UserInputError(
            f"{flag} {new_tokens} too large: valid 1..{max_positions - prompt_length} for a {prompt_length}-token "
            f"prompt on this model ({max_positions} positions)"
        )
