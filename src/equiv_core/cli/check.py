"""``equiv check FILE.py:NAME``: the user's own steering code against its intent (a spec), with ``equiv run``'s
model, generation, output and tracking options."""

from __future__ import annotations

import argparse

from equiv_core.cli.arguments import AddCommand, tracking_options
from equiv_core.cli.run import INTENT_GROUP, add_run_options, run_config
from equiv_core.config.check import FORMS, TARGET_HELP, UserTarget
from equiv_core.support.errors import UserInputError
from equiv_core.support.walltime import CommandStart

# equiv run's options that say how *its* arms are written (the study's edit, the step-selector arm): equiv check
# runs the user's code in their place, so it refuses them (one line) and leaves them out of its help.
RUN_ARM_OPTIONS = frozenset({"layer", "position", "steps"})


def check_command(arguments: argparse.Namespace, started: CommandStart) -> int:
    from equiv_core.jobs.run import run_job

    given = [f"--{name}" for name in sorted(RUN_ARM_OPTIONS) if getattr(arguments, name) is not None]
    if given:
        raise UserInputError(
            f"{' and '.join(given)}: equiv run's own arms (--layer, --position: the original study's edit; --steps: "
            "its step-selector arm); equiv check runs your code instead (the intent's layers and positions: "
            "--layers, --positions)"
        )
    target = UserTarget.parse(arguments.target, arguments.form)
    config = run_config(arguments, check=target)
    if config.spec is not None and not config.spec.site.is_default:
        raise UserInputError(
            f"--site {config.spec.site.describe()}: equiv check observes what the blocks output (the residual "
            "stream), so it judges intents at block-output only; equiv run checks the other sites"
        )
    return run_job(config, arguments.json, arguments.plot, tracking_options(arguments), started)


def add_parser(command: AddCommand) -> None:
    """``equiv check`` and its options."""
    check = command(
        "check",
        "check your own steering code: what it touched (observed at every block, step and position) and whether it "
        "gives the raw-hook reference of what it is meant to do (the intent: --recipe, --spec or --op ...)",
    )
    check.add_argument("target", metavar="FILE.py:NAME", help=TARGET_HELP)
    check.add_argument(
        "--form",
        default=None,
        choices=FORMS,
        help="hooks: steer(model) -> context manager; generate: steer(model, tokenizer, input_ids, attention_mask, "
        "max_new_tokens, generation_kwargs) -> ids (default: told by the signature)",
    )
    add_run_options(check, INTENT_GROUP, RUN_ARM_OPTIONS)
    check.set_defaults(handler=check_command)
