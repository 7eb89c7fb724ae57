"""``equiv run``: its options (the original study's edit, a steering spec, generation settings) into a RunConfig."""

from __future__ import annotations

import argparse

from equiv_core.cli.arguments import (
    AddCommand,
    add_declared_options,
    add_tracking_options,
    declared_values,
    tracking_options,
)
from equiv_core.config.catalog import DEFAULT_EXPERIMENT
from equiv_core.config.check import UserTarget
from equiv_core.config.decoding import GENERATION, Decoding
from equiv_core.config.options import csv
from equiv_core.config.run import RunConfig, read_prompts
from equiv_core.spec.steering_spec import OPS, POSITION_KINDS, SITES, SPEC_FIELDS, SteeringSpec
from equiv_core.support.errors import UserInputError
from equiv_core.support.walltime import CommandStart

GENERATION_FLAGS = ("prompts", "padding", "add_special_tokens", "chat_template", "do_sample", "stop_at_eos", "prefix")


def _generation_asked(arguments: argparse.Namespace) -> bool:
    """A generation setting (batch, encoding, sampling, EOS) that only spec findings check was given."""
    return any(getattr(arguments, name) not in (None, False) for name in GENERATION_FLAGS)


def steering_spec(arguments: argparse.Namespace) -> SteeringSpec | None:
    """The spec the options describe (``--recipe``, then ``--spec FILE``, then single options:
    :func:`~equiv_core.spec.recipes.spec_from_sources`); None when no steering option is given (the original
    study's five findings). Generation settings (``--prompts``, sampling, ...) without a spec mean the default spec:
    the original study's zeroing edit."""
    from equiv_core.spec.recipes import spec_from_sources

    options = {name: getattr(arguments, name) for name in SPEC_FIELDS}
    spec = spec_from_sources(arguments.recipe, arguments.spec, options)
    if spec is None:
        return SteeringSpec() if _generation_asked(arguments) else None
    if arguments.layer is not None or arguments.position is not None:
        raise UserInputError(
            "--layer and --position set the original study's edit; with a steering spec use --layers and --positions"
        )
    return spec


def run_command(arguments: argparse.Namespace, started: CommandStart) -> int:
    from equiv_core.jobs.run import run_job

    config = run_config(arguments)
    return run_job(config, arguments.json, arguments.plot, tracking_options(arguments), started)


def run_config(arguments: argparse.Namespace, check: UserTarget | None = None) -> RunConfig:
    """The RunConfig of ``equiv run``'s options (and of ``equiv check``'s, with ``check`` the user's code)."""
    decoding = Decoding(**declared_values(arguments, Decoding), seed=arguments.seed)
    if arguments.prompts is not None and arguments.prompt is not None:
        raise UserInputError("give --prompt or --prompts, not both")
    if arguments.padding is not None and arguments.prompts is None:
        raise UserInputError("--padding applies to a batch; give --prompts FILE too")
    if arguments.prefix is not None and not arguments.prefix.strip():
        raise UserInputError("--prefix is empty; give the text to prefill, or leave --prefix out")
    config = RunConfig(
        **declared_values(arguments, RunConfig),
        experiments=csv(arguments.only) if arguments.only else None,
        spec=steering_spec(arguments),
        prompts=read_prompts(arguments.prompts) if arguments.prompts is not None else (),
        padding=arguments.padding,  # checked by validate_config, like every other entry point's
        decoding=decoding,
        check=check,
    )
    return config


SPEC_GROUP = (
    "steering spec (any of these runs the spec findings coverage, arms_agree, cache_vs_recompute and "
    "steered_differs instead of the original study's five)"
)
INTENT_GROUP = "the intent: what the checked code is meant to do, as a steering spec (one of these is required)"


def add_spec_options(
    parser: argparse.ArgumentParser, title: str = SPEC_GROUP, hidden: frozenset[str] = frozenset()
) -> None:
    """The steering spec's options (those named in ``hidden`` parsed but left out of the help)."""
    group = parser.add_argument_group(title)
    group.add_argument("--recipe", default=None, help="a named spec from the catalogue (`equiv recipes`)")
    group.add_argument("--spec", default=None, metavar="FILE.toml", help="a TOML file with the fields below")
    group.add_argument("--op", default=None, help=f"one of {', '.join(OPS)} (default: zero)")
    group.add_argument(
        "--vector",
        default=None,
        help="a .pt/.npy/.safetensors file ([hidden] or [layers, hidden]), random:SEED, or actadd:PROMPT_A|PROMPT_B",
    )
    group.add_argument(
        "--scale",
        default=None,
        help="coefficient of add / ablate (default 1; 0 must leave the output unsteered), value of clamp, factor of "
        "scale; for add and clamp KxNORM (e.g. 4xnorm) is K times the residual stream's mean norm at the layer",
    )
    group.add_argument(
        "--scale-unit",
        default=None,
        help="absolute (default) or norm: --scale in multiples of the residual norm (as --scale 4xnorm)",
    )
    group.add_argument("--layers", default=None, help="L, L1,L2 or A:B (Python slice; negatives count from the end)")
    group.add_argument(
        "--site",
        default=None,
        help=f"the tensor of each steered block to edit: {', '.join(SITES)} (default block-output, the residual "
        "stream; README, 'Sites')",
    )
    group.add_argument("--heads", default=None, help="heads to steer at head-input (or a module site): H, H1,H2 or A:B")
    group.add_argument(
        "--positions", default=None, help=f"an integer, a list like 0,3, or one of {', '.join(POSITION_KINDS)}"
    )
    group.add_argument(
        "--steps",
        default=None,
        help=argparse.SUPPRESS
        if "steps" in hidden
        else "how the step-selector arm is written: prompt-pass, K, K:M, K:, every (default "
        "auto: iter[0] for prompt positions only, else every)",
    )
    group.add_argument(
        "--indexing",
        default=None,
        help="absolute (default): positions are token positions; literal: integer "
        "positions are indices into each pass, as `h[:, i]` in user code",
    )


def add_spec_and_generation_groups(
    parser: argparse.ArgumentParser, spec_title: str = SPEC_GROUP, hidden: frozenset[str] = frozenset()
) -> argparse._ArgumentGroup:
    """The steering spec's options, then the generation settings' group with ``--prompts`` and ``--padding`` (the
    configs' own generation options join it); returns that group."""
    add_spec_options(parser, spec_title, hidden)
    group = parser.add_argument_group(
        "generation settings (checked by the spec findings; without a spec option they use the original zeroing "
        "edit as a spec)"
    )
    group.add_argument(
        "--prompts",
        default=None,
        metavar="FILE",
        help="run the prompts of FILE (one per line; - for stdin) as one batch",
    )
    group.add_argument("--padding", default=None, help="left or right, for --prompts (default: left)")
    return group


def add_parser(command: AddCommand) -> None:
    """``equiv run`` and its options."""
    run = command("run", "run the five findings (or a steering spec's findings) and print a report")
    add_run_options(run)
    run.set_defaults(handler=run_command)


def add_run_options(
    run: argparse.ArgumentParser, spec_title: str = SPEC_GROUP, hidden: frozenset[str] = frozenset()
) -> None:
    """``equiv run``'s options (``equiv check`` takes them too, the spec being the intent: ``spec_title``; the
    options named in ``hidden`` it parses to refuse them, and leaves out of its help)."""
    add_declared_options(run, RunConfig, hidden=hidden)
    run.add_argument("--only", default=None, help="comma-separated finding ids to run (default: all)")
    run.add_argument("--json", default=None, metavar="PATH", help="also write the full results as JSON here")
    run.add_argument("--plot", default=None, metavar="PATH", help="draw a steering spec's coverage map (PNG) here")
    generation = add_spec_and_generation_groups(run, spec_title, hidden)
    add_declared_options(run, RunConfig, {GENERATION: generation})
    add_declared_options(run, Decoding, {GENERATION: generation})
    add_tracking_options(run, DEFAULT_EXPERIMENT)
