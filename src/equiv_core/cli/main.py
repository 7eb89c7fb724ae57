"""The ``equiv`` command line: the parser (one subcommand per module of this package) and each outcome's exit status.

Importing this module, ``equiv --help``, ``equiv models`` and ``equiv recipes`` import neither torch nor nnsight
nor MLflow. Exit status: 0 when every finding holds, 1 when one fails, 2 on bad input (one line on stderr,
nothing written), 3 on a fault of the environment after the start (model cache, tracking store, disk: one line
naming it; ``--debug`` shows the traceback), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

from equiv_core.cli import audit, bench, check, conformance, lists, matrix, run, runs
from equiv_core.support.errors import EnvironmentFault, ExitStatus, UserCodeRaised, UserInputError
from equiv_core.support.interrupts import interrupts_handled
from equiv_core.support.walltime import CommandStart, process_started


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one ``equiv: error:`` line and exit 2, like every other bad input; a
    subcommand's mistake points at its ``--help``."""

    def error(self, message: str) -> NoReturn:
        where = f" (see `{self.prog} --help`)" if self.prog != "equiv" else " (see `equiv --help`)"
        hint = _closest_choice(message) or _plural_option(message, self)
        self.exit(ExitStatus.BAD_INPUT, f"equiv: error: {message}{hint}{where}\n")


def _plural_option(message: str, parser: argparse.ArgumentParser) -> str:
    """``; a steering spec's positions are given with --positions`` where a word or list went to the original
    study's integer --layer or --position, in a command that takes the spec's option."""
    found = re.match(r"argument --(layer|position): invalid int value", message)
    if found is None or f"--{found[1]}s" not in parser._option_string_actions:
        return ""
    return f"; a steering spec's {found[1]}s are given with --{found[1]}s"


def _closest_choice(message: str) -> str:
    """``; did you mean 'run'?`` for argparse's "invalid choice: 'rn' (choose from 'run', ...)", else ""."""
    found = re.fullmatch(r".*invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if found is None:
        return ""
    close = difflib.get_close_matches(found[1], re.findall(r"'([^']*)'", found[2]), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _unrecognized(extras: list[str], command: argparse.ArgumentParser) -> str:
    """``unrecognized arguments: --modle x (did you mean --model?)``: the closest option of the command."""
    options = [option for action in command._actions for option in action.option_strings if option.startswith("--")]
    guesses = {
        extra: difflib.get_close_matches(extra.split("=")[0], options, n=1, cutoff=0.6)
        for extra in extras
        if extra.startswith("--")
    }
    hints = [(extra, found[0]) for extra, found in guesses.items() if found]
    said = f"unrecognized arguments: {' '.join(extras)}"
    if len(hints) == 1:
        return f"{said}; did you mean {hints[0][1]}?"
    return f"{said}; did you mean {', '.join(f'{meant} for {extra}' for extra, meant in hints)}?" if hints else said


@contextmanager
def _no_third_party_bars_in_a_log() -> Iterator[None]:
    """Where stderr is not a terminal, switch off third-party progress bars for the command, then restore the
    environment as it was.

    In a log, transformers' "Loading weights", its GGUF conversion and hub downloads are carriage-return noise
    around the one-line messages; equiv's own steps print one line each instead. tqdm reads ``TQDM_*`` defaults
    when it is imported (``tqdm.utils.envwrap``, tqdm >= 4.66); huggingface_hub reads
    ``HF_HUB_DISABLE_PROGRESS_BARS``. A user's own setting wins.
    """
    added = (
        []
        if sys.stderr.isatty()
        else [n for n in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS") if n not in os.environ]
    )
    os.environ.update(dict.fromkeys(added, "1"))
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommands' parsers by name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("equiv's parser has no subcommands")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of an error, not only its one line")
    parser = _Parser(
        prog="equiv", description="Steering-equivalence findings and benchmarks for nnsight.", parents=[common]
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, parents=[common])

    run.add_parser(command)
    check.add_parser(command)
    bench.add_parser(command)
    runs.add_parsers(command)
    audit.add_parsers(command)
    conformance.add_parsers(command)
    matrix.add_parser(command)
    lists.add_parsers(command)
    return parser


def _user_traceback(error: Exception) -> None:
    """The lines of the traceback in the user's own file (``equiv check``), after our one line."""
    lines = getattr(error, "user_traceback", ())
    if lines:
        print("your code (most recent call last):", file=sys.stderr)
        for line in lines:
            print(line, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``equiv`` console script: returns the exit status (also for ``--help`` and usage
    errors, which argparse reports by raising SystemExit)."""
    parser = build_parser()
    try:
        arguments, extras = parser.parse_known_args(argv)
        if extras:
            command = _commands(parser)[arguments.command]
            command.error(_unrecognized(extras, command))
    except SystemExit as exit_request:
        code = exit_request.code
        return code if isinstance(code, int) else ExitStatus.OK if code is None else ExitStatus.BAD_INPUT
    # MLflow's INFO lines ("Creating initial MLflow database tables", ...) would surround the one-line messages;
    # MLflow reads this variable when it is imported (mlflow.utils.logging_utils, MLflow 3.x). A user's setting wins.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # When the command began, and when its process did (as the console script; in-process callers such as tests
    # have no start-up of their own to report): `equiv run` reports where its wall time went from there.
    started = CommandStart(process_started() if argv is None else time.time(), time.time())
    try:
        # SIGTERM (e.g. a CI timeout) ends runs as KILLED, like Ctrl-C, instead of leaving them RUNNING; neither
        # lands inside a tracking-store write (equiv_core.support.interrupts).
        with interrupts_handled(), _no_third_party_bars_in_a_log():
            return int(arguments.handler(arguments, started))
    except UserInputError as error:
        print(f"equiv: error: {error}", file=sys.stderr)
        _user_traceback(error)
        return ExitStatus.BAD_INPUT
    except UserCodeRaised as error:
        print(f"equiv: {error}", file=sys.stderr)
        _user_traceback(error)
        return ExitStatus.FINDING_FAILED
    except EnvironmentFault as error:
        if arguments.debug:
            traceback.print_exc()
        print(f"equiv: error: {error}", file=sys.stderr)
        return ExitStatus.ENVIRONMENT
    except KeyboardInterrupt:
        print("equiv: interrupted", file=sys.stderr)
        return ExitStatus.INTERRUPTED
    except BrokenPipeError:  # the reader went away (`equiv recipes | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitStatus.OK


if __name__ == "__main__":
    raise SystemExit(main())
