"""The options of the commands: those a config declares on its fields (:mod:`equiv_core.config.options`) added to
a parser and read back into the config's values; and the tracking options every command takes. Torch-free."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any

from equiv_core.config.options import declared_options
from equiv_core.config.tracking import TrackingOptions

# Adds one subcommand's parser: ``command(name, help)``.
AddCommand = Callable[[str, str], argparse.ArgumentParser]


def tracking_options(arguments: argparse.Namespace) -> TrackingOptions:
    return TrackingOptions(not getattr(arguments, "no_mlflow", False), arguments.tracking_uri, arguments.experiment)


def add_tracking_options(parser: argparse.ArgumentParser, experiment: str, off_switch: bool = True) -> None:
    """--tracking-uri and --experiment (default ``experiment``), and --no-mlflow where logging can be skipped."""
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else the sqlite store in mlflow/)",
    )
    parser.add_argument("--experiment", default=experiment, help=f"MLflow experiment name (default: {experiment})")
    if off_switch:
        parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")


def add_declared_options(
    parser: argparse.ArgumentParser,
    config_type: type,
    groups: Mapping[str, Any] | None = None,
    hidden: frozenset[str] = frozenset(),
) -> None:
    """An argument for every field of ``config_type`` that declares an option, in field order: without ``groups``,
    the options that belong to no group; with them, each option of a group in ``groups`` added to that argparse
    argument group (so a command lists its own options first, then its groups in the order it creates them).
    The fields named in ``hidden`` are parsed (the command refuses them itself) but left out of the help."""
    for declared in declared_options(config_type):
        how = declared.option
        if (how.group is None) != (groups is None) or (groups is not None and how.group not in groups):
            continue
        target = parser if groups is None or how.group is None else groups[how.group]
        shown = argparse.SUPPRESS if declared.name in hidden else how.help
        if how.switch:
            target.add_argument(how.flag, dest=declared.name, action="store_true", help=shown)
            continue
        target.add_argument(
            how.flag,
            dest=declared.name,
            type=how.parse or str,
            default=None if how.given_only else declared.default,
            metavar=how.metavar,
            choices=None if how.choices is None else list(how.choices),
            help=shown,
        )


def declared_values(arguments: argparse.Namespace, config_type: type) -> dict[str, Any]:
    """The values of ``config_type``'s declared options in ``arguments`` (an option given only where it was given:
    its field's default otherwise)."""
    values = {}
    for declared in declared_options(config_type):
        given = getattr(arguments, declared.name)
        values[declared.name] = declared.default if given is None and declared.option.given_only else given
    return values
