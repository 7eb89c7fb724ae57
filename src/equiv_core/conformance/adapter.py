"""What a library adapter declares: for each intent, the library's own way of writing it (or why it cannot).

An adapter is one module of :mod:`equiv_core.conformance.libraries` with a module-level ``ADAPTER``
(:class:`Adapter`). Each :class:`Way` turns a :class:`~equiv_core.conformance.vectors.SteeringTask` into a
steering function of one of ``equiv check``'s two forms (README, "Check your own steering"):

- hooks form: ``steer(model, tokenizer) -> context manager`` that installs the steering on the Hugging Face model
  and removes it on exit; Hugging Face ``generate`` runs inside it;
- generate form: ``steer(model, tokenizer, input_ids, attention_mask, max_new_tokens, generation_kwargs) -> ids``
  ``[batch, prompt + new]``, generating the library's own way.

The function is observed and judged like any user code; an adapter never judges itself.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from equiv_core.config.check import Form
from equiv_core.conformance.intents import Intent, Variant
from equiv_core.conformance.vectors import SteeringTask


@dataclass(frozen=True, slots=True)
class Way:
    """One library's way of writing ``intent``.

    ``steer`` builds the steering function for one task (None when the library cannot express the intent:
    ``not_expressible`` then gives the library's reason, from its docs or code). ``follows`` cites the doc,
    example or code the way is written after (URL or ``package/path@version``). ``attn_implementation``: the
    attention kernel the library puts the model on (TransformerLens switches it to ``eager`` in place), which the
    reference then runs with too. ``note``: what a reader of the cell should know (the workaround, in a phrase).
    """

    intent: Intent
    follows: str
    steer: Callable[[SteeringTask], Callable[..., Any]] | None = None
    form: Form = Form.HOOKS
    variant: Variant = Variant.IDIOMATIC
    not_expressible: str | None = None
    attn_implementation: str | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if (self.steer is None) == (self.not_expressible is None):
            raise ValueError(f"{self.intent}: a way has either steer or a not_expressible reason, not both/neither")


__all__ = ["Adapter", "Form", "Variant", "Way", "load_adapter"]  # Form and Variant: what adapters declare ways with


@dataclass(frozen=True, slots=True)
class Adapter:
    """A library's adapter: the distribution whose version is recorded, and its ways (one per intent and variant;
    an intent with no way at all is a defect of the adapter, caught by :meth:`missing`)."""

    distribution: str
    ways: tuple[Way, ...]

    def missing(self) -> tuple[Intent, ...]:
        """The intents this adapter says nothing about (neither a way nor a reason)."""
        covered = {way.intent for way in self.ways}
        return tuple(intent for intent in Intent if intent not in covered)


def load_adapter(module: str) -> Adapter:
    """The ``ADAPTER`` of :mod:`equiv_core.conformance.libraries` ``.module`` (importing the library itself: call it
    in the library's environment). Raises ModuleNotFoundError when the library is not installed."""
    loaded = importlib.import_module(f"equiv_core.conformance.libraries.{module}")
    adapter = loaded.ADAPTER
    if not isinstance(adapter, Adapter):
        raise TypeError(f"equiv_core.conformance.libraries.{module}.ADAPTER is not an Adapter")
    return adapter
