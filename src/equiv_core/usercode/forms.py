"""Telling the two forms of user steering apart by the callable's signature (or as ``--form`` says)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from equiv_core.config.check import Form, UserTarget
from equiv_core.support.errors import UserCodeError
from equiv_core.usercode.loading import load_steering

GENERATE_PARAMETERS = ("model", "tokenizer", "input_ids", "attention_mask", "max_new_tokens", "generation_kwargs")
FORM_SIGNATURES = {
    Form.HOOKS: "steer(model) or steer(model, tokenizer) -> a context manager that installs the steering and "
    "removes it on exit",
    Form.GENERATE: f"steer({', '.join(GENERATE_PARAMETERS)}) -> token ids [batch, prompt + new]",
}


def _takes(signature: inspect.Signature, count: int) -> bool:
    """Whether a call with ``count`` positional arguments binds to ``signature``."""
    try:
        signature.bind(*([None] * count))
    except TypeError:
        return False
    return True


def detect_form(steer: Callable[..., Any], target: UserTarget) -> Form:
    """The form ``steer`` is written in: ``target.form`` when given (checked against the signature), else the one
    form its signature takes. Raises UserCodeError (exit 2) for a signature that takes neither form, or both
    without ``--form``."""
    try:
        signature = inspect.signature(steer)
    except (TypeError, ValueError):
        if target.form is not None:
            return target.form
        raise UserCodeError(f"{target.describe()}: its signature cannot be read; give --form hooks|generate") from None
    fits = {
        Form.HOOKS: _takes(signature, 1) or _takes(signature, 2),
        Form.GENERATE: _takes(signature, len(GENERATE_PARAMETERS)),
    }
    shown = f"{target.name}{signature}"
    if target.form is not None:
        if not fits[target.form]:
            raise UserCodeError(f"--form {target.form}: {shown} cannot be called as {FORM_SIGNATURES[target.form]}")
        return target.form
    matching = [form for form, ok in fits.items() if ok]
    if len(matching) == 1:
        return matching[0]
    if matching:
        raise UserCodeError(f"{target.describe()}: {shown} takes both forms; give --form hooks or --form generate")
    raise UserCodeError(
        f"{target.describe()}: {shown} fits neither form; hooks form: {FORM_SIGNATURES[Form.HOOKS]}; "
        f"generate form: {FORM_SIGNATURES[Form.GENERATE]}"
    )


@dataclass(frozen=True, slots=True)
class UserSteering:
    """The user's steering as loaded: where it is, the callable, the form it is written in."""

    target: UserTarget
    steer: Callable[..., Any]
    form: Form
    takes_tokenizer: bool = False  # hooks form written as steer(model, tokenizer)

    def describe(self) -> str:
        return f"{self.target.describe()} ({self.form} form)"


def load_user_steering(target: UserTarget) -> UserSteering:
    """Import ``target``'s file, take the callable and tell its form; UserCodeError (exit 2) for any fault of
    theirs (:func:`~equiv_core.usercode.loading.load_steering`, :func:`steering_of`)."""
    return steering_of(load_steering(target), target)


def steering_of(steer: Callable[..., Any], target: UserTarget) -> UserSteering:
    """``steer`` with its form told (:func:`detect_form`), which its target then records; UserCodeError (exit 2)
    for a signature of no form."""
    form = detect_form(steer, target)
    return UserSteering(replace(target, form=form), steer, form, form is Form.HOOKS and takes_tokenizer(steer))


def takes_tokenizer(steer: Callable[..., Any]) -> bool:
    """Whether a hooks-form ``steer`` can be called as ``steer(model, tokenizer)``."""
    try:
        return _takes(inspect.signature(steer), 2)
    except (TypeError, ValueError):
        return False
