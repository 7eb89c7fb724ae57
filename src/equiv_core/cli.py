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
from typing import TYPE_CHECKING, Any, NoReturn

from equiv_core.errors import UserInputError

if TYPE_CHECKING:
    from equiv_core.bench.sweep import BenchConfig
    from equiv_core.runner import RunReport

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


DEFAULT_PLOT = "results/bench-sweep.png"


def _output_target(value: str | None, flag: str = "--json") -> Path | None:
    """Check an output destination before any model work, so a bad path fails fast."""
    if value is None:
        return None
    path = Path(value)
    if path.is_dir():
        raise UserInputError(f"{flag} {value!r} is a directory; give a file path")
    if not path.parent.is_dir() and value != DEFAULT_PLOT:
        raise UserInputError(f"{flag} {value!r}: directory {str(path.parent)!r} does not exist")
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
    json_path = _output_target(arguments.json)
    validate_config(config)
    report = run_findings(config, progress=_progress)
    print(render(report))
    if json_path is not None:
        write_json_atomically(json_path, report.to_dict())
        _progress(f"wrote {json_path}")
    return EXIT_OK if report.all_hold else EXIT_FINDING_FAILED


def _csv_ints(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 8,16,32, got {value!r}") from None


def _command_bench(arguments: argparse.Namespace) -> int:
    from equiv_core.bench.sweep import BenchConfig, run_bench, validate_bench_config
    from equiv_core.bench.table import render_table

    config = BenchConfig(
        model=arguments.model,
        device=arguments.device,
        dtype=arguments.dtype,
        arms=tuple(arm.strip() for arm in arguments.arms.split(",") if arm.strip()),
        new_tokens=arguments.new_tokens,
        rounds=arguments.rounds,
        warmup=arguments.warmup,
        prompt=arguments.prompt,
        layer=arguments.layer,
        seed=arguments.seed,
    )
    json_path = _output_target(arguments.json)
    plot_path = None if arguments.no_plot else _output_target(arguments.plot, "--plot")
    validate_bench_config(config)
    findings = _bench_findings(config) if arguments.with_findings else None
    report = run_bench(config, progress=not arguments.no_progress, say=_progress)
    print(render_table(report))
    if plot_path is not None:
        from equiv_core.bench.plot import plot_sweep

        plot_sweep(report, plot_path)
        _progress(f"wrote {plot_path}")
    if json_path is not None:
        payload = report.to_dict()
        payload["plot"] = None if plot_path is None else str(plot_path)
        if findings is not None:
            payload["findings_run"] = findings.to_dict()
        write_json_atomically(json_path, payload)
        _progress(f"wrote {json_path}")
    findings_hold = findings is None or findings.all_hold
    return EXIT_OK if report.all_correct and findings_hold else EXIT_FINDING_FAILED


def _bench_findings(config: BenchConfig) -> RunReport:
    """The five findings on the model the benchmark will time, printed before the timings."""
    from equiv_core.report import render
    from equiv_core.runner import RunConfig, run_findings

    resolved = config.resolved()
    run_config = RunConfig(
        model=resolved.model or "",
        device=resolved.device,
        dtype=resolved.dtype,
        prompt=resolved.prompt,
        layer=resolved.layer,
        seed=resolved.seed,
    )
    report = run_findings(run_config, progress=_progress)
    print(render(report))
    print()
    return report


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

    from equiv_core.bench.arms import ARMS

    bench = commands.add_parser("bench", help="time plain / iter0 / recompute against a raw hook and unsteered")
    bench.add_argument(
        "--model", default=None, help=f"model (default: {DEFAULT_MODEL} on CPU, gpt2-small-random when CUDA is used)"
    )
    bench.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    bench.add_argument("--dtype", default="float32", choices=list(DTYPES), help="model dtype (default: float32)")
    bench.add_argument(
        "--arms", default=",".join(ARMS.names()), help=f"comma-separated arms (default: all: {','.join(ARMS.names())})"
    )
    bench.add_argument(
        "--new-tokens",
        type=_csv_ints,
        default=None,
        help="comma-separated sweep of new tokens (default: 8,16,32 on CPU; 8,32,128,512 on GPU)",
    )
    bench.add_argument("--rounds", type=int, default=10, help="timed rounds per cell (>= 1, default 10)")
    bench.add_argument("--warmup", type=int, default=1, help="untimed warm-up rounds per cell (default 1)")
    bench.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"prompt (default: {DEFAULT_PROMPT!r})")
    bench.add_argument("--layer", type=int, default=0, help="decoder layer edited (default 0)")
    bench.add_argument("--seed", type=int, default=0, help="seed for every RNG (default 0)")
    bench.add_argument("--json", default=None, metavar="PATH", help="write one record per (arm, new_tokens) here")
    bench.add_argument("--plot", default=DEFAULT_PLOT, metavar="PATH", help=f"sweep plot PNG (default: {DEFAULT_PLOT})")
    bench.add_argument("--no-plot", action="store_true", help="do not draw the sweep plot")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    bench.add_argument(
        "--with-findings",
        action="store_true",
        help="first run the five findings on the same model (what `nox -s bench` does)",
    )
    bench.set_defaults(handler=_command_bench)

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
