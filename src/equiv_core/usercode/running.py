"""Running the user's steering under the block observer, in its form, and checking what it hands back.

Hooks form: ``steer(model)`` is entered, then the observer, then Hugging Face ``generate`` (the observer's
pre-hooks are registered after the user's, so they see what the user's pre-hooks hand on). Generate form: the
observer is on before the call, and the function generates its own way. Either way the observer sees every forward
pass of every decoder block and the logits the model returned (:mod:`equiv_core.observe.observer`).
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from equiv_core.arms.steering import generation_kwargs, seed_sampling
from equiv_core.config.check import Form, UserTarget
from equiv_core.config.decoding import Decoding
from equiv_core.models.inputs import PromptBatch
from equiv_core.observe.observer import BlockObserver, Observation, ObservationError, ObserverRemoved
from equiv_core.support.errors import UserCodeError, UserCodeRaised, error_line
from equiv_core.usercode.forms import UserSteering
from equiv_core.usercode.loading import user_frames

# What generate form gets as ``generation_kwargs``: how to choose tokens, nothing about what generate returns.
_RESULT_KEYS = ("max_new_tokens", "use_cache", "output_logits", "return_dict_in_generate")


@dataclass(frozen=True, slots=True, eq=False)
class UserGeneration:
    """What the user's steering generated: ``sequences`` [batch, padded prompt + new] (CPU, int64) and the
    observation of every forward pass it ran (changes, pass shapes, per-pass logits)."""

    sequences: torch.Tensor
    observation: Observation
    generate_s: float  # the user's generation, observed (the observer's hooks included)
    replay_s: float  # replaying every block call and comparing


def user_generation_kwargs(new_tokens: int, pad_token_id: int | None, decoding: Decoding) -> dict[str, object]:
    """The ``generation_kwargs`` a generate-form function gets: sampling, ``min_new_tokens`` and the pad id, as the
    reference uses them (:func:`equiv_core.arms.steering.generation_kwargs`), without the keys that change what
    ``generate`` returns."""
    kwargs = generation_kwargs(new_tokens, pad_token_id, True, decoding)
    return {key: value for key, value in kwargs.items() if key not in _RESULT_KEYS}


def run_user_steering(
    steering: UserSteering,
    model: nn.Module,
    tokenizer: Any,
    batch: PromptBatch,
    new_tokens: int,
    decoding: Decoding,
    observer: BlockObserver,
) -> UserGeneration:
    """Generate ``new_tokens`` tokens for ``batch`` with the user's steering, observed.

    Raises UserCodeRaised (exit 1) when the user's code raises, naming the forward pass it was in, and
    UserCodeError (exit 2) when it hands back something of the wrong kind or shape.
    """
    target = steering.target
    run = _Run(steering, model, tokenizer, batch, new_tokens, tokenizer.pad_token_id, decoding, observer)
    started = time.perf_counter()
    try:
        sequences = _hooks_form(run) if steering.form is Form.HOOKS else _generate_form(run)
    except (UserCodeError, UserCodeRaised):
        raise
    except Exception as error:  # noqa: BLE001 - the user's steering is the only new code in this generation
        step = observer.passes_so_far - 1
        when = (
            "before the first forward pass" if step < 0 else f"at step {step} ({'prefill' if step == 0 else 'decode'})"
        )
        raise UserCodeRaised(
            f"{target.describe()} raised {when}: {error_line(error)}",
            user_frames(error, target.path),
            when=when,
            error=error_line(error),
        ) from error
    generated = time.perf_counter()
    _check_sequences(sequences, target, batch, new_tokens, decoding)
    steps = int(sequences.shape[1]) - batch.padded_length
    try:
        observation = observer.observation(steps)
    except ObserverRemoved as error:
        raise UserCodeError(f"{target.describe()}: {error}") from error  # the cause tells it apart
    except ObservationError as error:
        raise UserCodeError(f"{target.describe()}: equiv check cannot observe this code: {error}") from None
    replayed = time.perf_counter()
    ids = sequences.detach().to("cpu", torch.int64)
    return UserGeneration(ids, observation, generated - started, replayed - generated)


def _when(steering: UserSteering, begun: int) -> str:
    """Where in the generation the user's code raised: the step (hooks form: HF ``generate``'s passes are the steps);
    the forward pass of its own run (generate form: passes before generating, e.g. for its vector, count too)."""
    if begun == 0:
        return "before the first forward pass"
    if steering.form is Form.GENERATE:
        return f"in forward pass {begun} of its run"
    return f"at step {begun - 1} ({'prefill' if begun == 1 else 'decode'})"


@dataclass(frozen=True, slots=True, eq=False)
class _Run:
    """One observed generation with the user's steering: what both forms take."""

    steering: UserSteering
    model: nn.Module
    tokenizer: Any
    batch: PromptBatch
    new_tokens: int
    pad: int | None
    decoding: Decoding
    observer: BlockObserver


def _hooks_form(run: _Run) -> torch.Tensor:
    steering, model, batch, decoding = run.steering, run.model, run.batch, run.decoding
    target = steering.target
    manager = steering.steer(model, run.tokenizer) if steering.takes_tokenizer else steering.steer(model)
    if not isinstance(manager, AbstractContextManager) and not (
        hasattr(manager, "__enter__") and hasattr(manager, "__exit__")
    ):
        raise UserCodeError(
            f"{target.describe()}(model) returned {type(manager).__name__}, not a context manager; the hooks form "
            "returns one that installs the steering on enter and removes it on exit"
        )
    kwargs = generation_kwargs(run.new_tokens, run.pad, True, decoding)
    with manager, run.observer.watching(), torch.no_grad():
        seed_sampling(decoding)
        output = model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, **kwargs)  # type: ignore[operator]
    return torch.as_tensor(output.sequences)


def _generate_form(run: _Run) -> torch.Tensor:
    kwargs = user_generation_kwargs(run.new_tokens, run.pad, run.decoding)
    with run.observer.watching(), torch.no_grad():
        seed_sampling(run.decoding)
        ids, mask = run.batch.input_ids.clone(), run.batch.attention_mask.clone()
        result = run.steering.steer(run.model, run.tokenizer, ids, mask, run.new_tokens, kwargs)
    sequences = getattr(result, "sequences", result)  # a GenerateOutput is taken too
    if not isinstance(sequences, torch.Tensor):
        raise UserCodeError(
            f"{run.steering.target.describe()} returned {type(result).__name__}; the generate form returns token ids "
            f"[batch, prompt + new] (a LongTensor)"
        )
    return sequences


def _check_sequences(
    sequences: torch.Tensor, target: UserTarget, batch: PromptBatch, new_tokens: int, decoding: Decoding
) -> None:
    """The ids are [batch, padded prompt + new] integers starting with the prompt as given; fewer new tokens only
    when generation may stop at EOS. UserCodeError otherwise."""
    where = target.describe()
    expected = batch.padded_length + new_tokens
    if sequences.is_floating_point() or sequences.dim() != 2 or sequences.shape[0] != batch.size:
        raise UserCodeError(
            f"{where} returned a {sequences.dtype} tensor of shape {tuple(sequences.shape)}; expected token ids "
            f"[{batch.size}, {expected}] (batch, prompt + new)"
        )
    columns = int(sequences.shape[1])
    new = columns - batch.padded_length
    if columns == new_tokens and new_tokens < expected:
        raise UserCodeError(
            f"{where} returned only the new tokens [{batch.size}, {columns}]; return the prompt and the new tokens "
            f"[{batch.size}, {expected}], as generate does"
        )
    if new < new_tokens and not (decoding.stop_at_eos and new >= 1):
        raise UserCodeError(f"{where} returned {max(new, 0)} new tokens per row; asked for {new_tokens}")
    if new > new_tokens:
        raise UserCodeError(f"{where} returned {new} new tokens per row; asked for {new_tokens}")
    if not torch.equal(sequences[:, : batch.padded_length].to(batch.input_ids.device), batch.input_ids):
        raise UserCodeError(
            f"{where} returned ids whose first {batch.padded_length} columns are not the prompt it was given "
            "(return the whole sequence, prompt included, as generate does)"
        )
