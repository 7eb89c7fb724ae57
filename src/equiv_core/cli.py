"""The ``equiv`` command line: ``equiv run`` (the five findings) and ``equiv models``.

Exit status: 0 when every finding holds, 1 when one fails, 2 on bad input (one line on stderr, nothing
written).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, NoReturn

from equiv_core.errors import UserInputError

EXIT_OK, EXIT_FINDING_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line and exit 2, like every other bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _progress(message: str) -> None:
    print(f"equiv: {message}", file=sys.stderr, flush=True)


def write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` through a temporary file, so a reader never sees half a file."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as stream:
            json.dump(payload, stream, indent=2, sort_keys=False)
            stream.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _json_target(value: str | None) -> Path | None:
    """Check the --json destination before any model work, so a bad path fails fast."""
    if value is None:
        return None
    path = Path(value)
    if path.is_dir():
        raise UserInputError(f"--json {value!r} is a directory; give a file path")
    if not path.parent.is_dir():
        raise UserInputError(f"--json {value!r}: directory {str(path.parent)!r} does not exist")
    return path


def _command_run(arguments: argparse.Namespace) -> int:
    from equiv_core.report import render
    from equiv_core.runner import RunConfig, run_findings, validate_config

    config = RunConfig(
        model=arguments.model,
        device=arguments.device,
        dtype=arguments.dtype,
        prompt=arguments.prompt,
        max_new_tokens=arguments.max_new_tokens,
        layer=arguments.layer,
        position=arguments.position,
        seed=arguments.seed,
        **({"experiments": tuple(arguments.only.split(","))} if arguments.only else {}),
    )
    json_path = _json_target(arguments.json)
    validate_config(config)
    report = run_findings(config, progress=_progress)
    print(render(report))
    if json_path is not None:
        write_json_atomically(json_path, report.to_dict())
        _progress(f"wrote {json_path}")
    return EXIT_OK if report.all_hold else EXIT_FINDING_FAILED


def _command_models(_arguments: argparse.Namespace) -> int:
    from equiv_core.models import BUILTIN_MODELS, DEFAULT_MODEL

    for name, spec in BUILTIN_MODELS.items():
        default = " (default)" if name == DEFAULT_MODEL else ""
        print(f"{name:<18} {spec.description}{default}")
    print(
        "Also: any local model directory, or a Hugging Face hub id (e.g. openai-community/gpt2) where the hub "
        "is reachable."
    )
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    from equiv_core.experiments.base import DEFAULT_MAX_NEW_TOKENS, DEFAULT_PROMPT
    from equiv_core.models import DEFAULT_MODEL, DTYPES

    parser = _Parser(prog="equiv", description="Steering-equivalence findings and benchmarks for nnsight.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run the five findings on one model and print a report")
    run.add_argument("--model", default=DEFAULT_MODEL, help="built-in name (see `equiv models`), directory or hub id")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    run.add_argument("--dtype", default="float32", choices=list(DTYPES), help="model dtype (default: float32)")
    run.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"prompt (default: {DEFAULT_PROMPT!r})")
    run.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, help="tokens to generate (>= 1)")
    run.add_argument(
        "--layer",
        type=int,
        default=None,
        help="decoder layer of findings 2-5 (default 0); finding 1 always uses the last layer",
    )
    run.add_argument(
        "--position",
        type=int,
        default=-1,
        help="prompt position edited in findings 2, 3, 5 (default -1, the last prompt token)",
    )
    run.add_argument("--seed", type=int, default=0, help="seed for every RNG (default 0)")
    run.add_argument("--only", default=None, help="comma-separated finding ids to run (default: all five)")
    run.add_argument("--json", default=None, metavar="PATH", help="also write the full results as JSON here")
    run.set_defaults(handler=_command_run)

    models = commands.add_parser("models", help="list the built-in offline models")
    models.set_defaults(handler=_command_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``equiv`` console script."""
    arguments = build_parser().parse_args(argv)
    try:
        return int(arguments.handler(arguments))
    except UserInputError as error:
        print(f"equiv: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("equiv: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
