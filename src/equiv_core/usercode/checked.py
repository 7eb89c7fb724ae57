"""What ``equiv check`` runs for a steering function handed over as an object (``check_steering``, the conformance
cells): the intent made a spec, the function's form told apart, and the run configuration validated. The findings
are run by the caller (:func:`equiv_core.findings.runner.run_findings`)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from equiv_core.config.check import Form, UserTarget
from equiv_core.config.decoding import Decoding
from equiv_core.config.run import RunConfig, ValidRunConfig, validate_config
from equiv_core.spec.recipes import spec_from_sources
from equiv_core.spec.steering_spec import SteeringSpec
from equiv_core.support.errors import UserInputError
from equiv_core.usercode.forms import UserSteering, steering_of

IntentLike = str | SteeringSpec | Mapping[str, str | float]  # a recipe name, a spec, or spec options


def intent_spec(intent: IntentLike) -> SteeringSpec:
    """``intent`` as a spec: a recipe name, a SteeringSpec, or spec options as on the command line (UserInputError
    for anything else)."""
    if isinstance(intent, SteeringSpec):
        return intent
    if isinstance(intent, str):
        found = spec_from_sources(intent, None, {})
    else:
        found = spec_from_sources(None, None, {key: value for key, value in intent.items()})
    if found is None:
        raise UserInputError("intent: give a recipe name, a SteeringSpec or spec options such as {'op': 'add', ...}")
    return found


def steering_target(steer: Callable[..., Any], form: Form | str | None) -> UserTarget:
    """Where ``steer`` is written (its source file, the function as written rather than a decorator's wrapper) and
    its name, with the form as told (None: told apart by the signature)."""
    try:  # @contextmanager's wrapper lives in contextlib
        path = inspect.getsourcefile(inspect.unwrap(steer)) or "<unknown>"
    except TypeError:
        path = "<unknown>"
    name = getattr(steer, "__qualname__", getattr(steer, "__name__", type(steer).__name__))
    return UserTarget(path, name, Form(form) if form is not None else None)


def checked_config(
    steer: Callable[..., Any],
    intent: IntentLike,
    *,
    model: str,
    prompts: tuple[str, ...],
    max_new_tokens: int,
    form: Form | str | None,
    device: str,
    dtype: str,
    seed: int,
    padding: str | None,
    decoding: Decoding,
    attn_implementation: str | None,
) -> tuple[ValidRunConfig, UserSteering]:
    """The validated run configuration of checking ``steer`` against ``intent`` on ``model`` for ``prompts``
    (several: one padded batch), and the steering in its form. Raises UserInputError for a bad argument and
    UserCodeError for a function of no known form."""
    target = steering_target(steer, form)
    config = RunConfig(
        model=model,
        device=device,
        dtype=dtype,
        attn_implementation=attn_implementation,
        prompt=prompts[0] if prompts else "",
        max_new_tokens=max_new_tokens,
        seed=seed,
        spec=intent_spec(intent),
        prompts=prompts if len(prompts) > 1 else (),
        padding=padding,  # type: ignore[arg-type]  # checked by validate_config
        decoding=decoding,
        check=target,
    )
    valid = validate_config(config)
    steering = steering_of(steer, target)
    return ValidRunConfig(replace(valid, check=steering.target)), steering  # the form as told, as equiv check records
