"""Options more than one command takes, each defined once: the model and prompt, the tracking store; and the
value parsers they share. Torch-free."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from equiv_core.config.catalog import DEFAULT_PROMPT, DTYPE_NAMES
from equiv_core.config.tracking import TrackingOptions

# Adds one subcommand's parser: ``command(name, help)``.
AddCommand = Callable[[str, str], argparse.ArgumentParser]


def tracking_options(arguments: argparse.Namespace) -> TrackingOptions:
    return TrackingOptions(not getattr(arguments, "no_mlflow", False), arguments.tracking_uri, arguments.experiment)


def csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def csv_ints(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in csv(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 8,16,32, got {value!r}") from None


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


def add_model_options(
    parser: argparse.ArgumentParser, default_model: str | None, model_help: str, default_prompt: str | None
) -> None:
    parser.add_argument("--model", default=default_model, help=model_help)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--dtype", default="float32", choices=list(DTYPE_NAMES), help="model dtype (default: float32)")
    parser.add_argument("--prompt", default=default_prompt, help=f"prompt (default: {DEFAULT_PROMPT!r})")
    parser.add_argument("--seed", type=int, default=0, help="seed for every RNG, 0..2**32-1 (default 0)")
