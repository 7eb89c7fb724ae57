"""``equiv models`` and ``equiv recipes``: what is built in, listed without loading anything."""

from __future__ import annotations

import argparse

from equiv_core.cli.arguments import AddCommand
from equiv_core.config.catalog import BUILTIN_MODEL_INFO, DEFAULT_MODEL
from equiv_core.support.errors import ExitStatus
from equiv_core.support.walltime import CommandStart


def models_command(_arguments: argparse.Namespace, _started: CommandStart) -> int:
    for name, info in BUILTIN_MODEL_INFO.items():
        default = " (default)" if name == DEFAULT_MODEL else ""
        print(f"{name:<18} {info.description}{default}")
    print(
        "Also: any local model directory, or a Hugging Face hub id (e.g. openai-community/gpt2) where the hub "
        "is reachable."
    )
    return ExitStatus.OK


def recipes_command(_arguments: argparse.Namespace, _started: CommandStart) -> int:
    from equiv_core.spec.recipes import RECIPES

    width = max(len(name) for name in RECIPES)
    for name in RECIPES:
        recipe = RECIPES.get(name)
        print(f"{name:<{width}}  {recipe.summary}")
        print(f"{'':<{width}}  spec: {recipe.spec().describe()}")
        if recipe.known_wrong:
            print(f"{'':<{width}}  the tool must flag it: {recipe.flagged_by} fails with {recipe.flags!r}")
    print("Run one with `equiv run --recipe NAME`; spec options given with it override its fields.")
    return ExitStatus.OK


def add_parsers(command: AddCommand) -> None:
    """``equiv models`` and ``equiv recipes``."""
    models = command("models", "list the built-in offline models")
    models.set_defaults(handler=models_command)
    recipes = command("recipes", "list the built-in steering recipes")
    recipes.set_defaults(handler=recipes_command)
