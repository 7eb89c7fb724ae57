"""Command-line options declared on the config fields they fill: an option's flag, help and parser live beside
its field, its default and its check, and ``equiv_core.cli`` builds the parsers from them (as nox declares each
option as one typed object, and lm-evaluation-harness's configs carry their own help). Torch-free."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

OPTION = "equiv.option"  # the dataclass field metadata key
# Help of options that several configs declare (each declares its own field).
DEVICE_HELP = "auto, cpu, cuda or cuda:N (default: auto)"
SEED_HELP = "seed for every RNG, 0..2**32-1 (default 0)"


@dataclass(frozen=True, slots=True)
class Option:
    """How one config field is written on the command line.

    ``parse`` turns the text into the field's value (argparse's ``type``; its ``__name__`` names the value in
    argparse's error); ``switch``: a flag without a value that sets True; ``given_only``: the parser's default is
    None, so "not given" can be told from the default (the field's default applies after parsing); ``group``: the
    help section it is listed in (None: the command's own options).
    """

    flag: str
    help: str
    parse: Callable[[str], Any] | None = None
    switch: bool = False
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    given_only: bool = False
    group: str | None = None


def option(default: Any, flag: str, help: str, **how: Any) -> Any:
    """A dataclass field with ``default`` that is written ``flag`` on the command line (see :class:`Option`)."""
    return field(default=default, metadata={OPTION: Option(flag, help, **how)})


@dataclass(frozen=True, slots=True)
class DeclaredOption:
    """A config field that has an option: its name (the argparse destination), its default, its option."""

    name: str
    default: Any
    option: Option


def declared_options(config_type: type) -> tuple[DeclaredOption, ...]:
    """The fields of the dataclass ``config_type`` that declare an option, in field order."""
    return tuple(
        DeclaredOption(item.name, item.default, item.metadata[OPTION])
        for item in fields(config_type)
        if OPTION in item.metadata
    )


def csv(value: str) -> tuple[str, ...]:
    """``a, b,c`` -> ``("a", "b", "c")``; blank parts dropped."""
    return tuple(part.strip() for part in value.split(",") if part.strip())


def csv_ints(value: str) -> tuple[int, ...]:
    """``8,16,32`` -> ``(8, 16, 32)``; anything else is argparse's one-line error."""
    try:
        return tuple(int(part) for part in csv(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 8,16,32, got {value!r}") from None


def percent(value: str) -> float:
    """``2`` (percent) -> ``0.02`` (a fraction)."""
    return float(value) / 100
