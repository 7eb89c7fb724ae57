"""The ``equiv`` command line: parse arguments into typed configs and call :mod:`equiv_core.jobs.main`.

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
from pathlib import Path
from typing import NoReturn

from equiv_core.config.catalog import (
    BENCH_ARMS,
    BUILTIN_MODEL_INFO,
    DEFAULT_BUDGET_S,
    DEFAULT_EXPERIMENT,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_MAX_ROUNDS,
    DEFAULT_MIN_ROUNDS,
    DEFAULT_MODEL,
    DEFAULT_PROMPT,
    DTYPE_NAMES,
    TARGET_CI_HALF_WIDTH,
)
from equiv_core.jobs.main import DEFAULT_SWEEP_PLOT, EXIT_BAD_INPUT, EXIT_ENVIRONMENT, EXIT_OK, TrackingOptions
from equiv_core.spec.steering_spec import OPS, POSITION_KINDS, SPEC_FIELDS, SteeringSpec
from equiv_core.support.errors import EnvironmentFault, UserInputError
from equiv_core.support.interrupts import interrupts_handled
from equiv_core.support.walltime import CommandStart, process_started
from equiv_core.tracking.store import AUDIT_EXPERIMENT

EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one ``equiv: error:`` line and exit 2, like every other bad input; a
    subcommand's mistake points at its ``--help``."""

    def error(self, message: str) -> NoReturn:
        where = f" (see `{self.prog} --help`)" if self.prog != "equiv" else " (see `equiv --help`)"
        self.exit(EXIT_BAD_INPUT, f"equiv: error: {message}{_closest_choice(message)}{where}\n")


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


def _tracking(arguments: argparse.Namespace) -> TrackingOptions:
    return TrackingOptions(not getattr(arguments, "no_mlflow", False), arguments.tracking_uri, arguments.experiment)


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _csv_ints(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in _csv(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 8,16,32, got {value!r}") from None


GENERATION_FLAGS = ("prompts", "padding", "add_special_tokens", "chat_template", "do_sample", "stop_at_eos")


def _generation_asked(arguments: argparse.Namespace) -> bool:
    """A generation setting (batch, encoding, sampling, EOS) that only spec findings check was given."""
    return any(getattr(arguments, name) not in (None, False) for name in GENERATION_FLAGS)


def read_prompts(source: str) -> tuple[str, ...]:
    """The prompts of ``source`` (a file, or ``-`` for stdin): one per line, blank lines skipped.

    Raises UserInputError for a file that cannot be read or holds no prompt.
    """
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise UserInputError(f"--prompts {source!r}: cannot read it: {type(error).__name__}") from None
    prompts = tuple(line for line in text.removeprefix("\ufeff").splitlines() if line.strip())
    if not prompts:
        raise UserInputError(f"--prompts {source!r} holds no prompt; give one prompt per line")
    return prompts


def steering_spec(arguments: argparse.Namespace) -> SteeringSpec | None:
    """The spec the options describe: ``--recipe``, then ``--spec FILE``, then single options, each overriding the
    last; None when no steering option is given (the original study's five findings). Generation settings
    (``--prompts``, sampling, ...) without a spec mean the default spec: the original study's zeroing edit."""
    from equiv_core.spec.recipes import RECIPES
    from equiv_core.spec.steering_spec import load_spec_file, spec_from_options

    options = {name: getattr(arguments, name) for name in SPEC_FIELDS}
    file_options = load_spec_file(Path(arguments.spec)) if arguments.spec is not None else {}
    file_recipe = file_options.pop("recipe", None)
    if arguments.recipe is not None and file_recipe is not None and file_recipe != arguments.recipe:
        raise UserInputError(
            f"two recipes: --recipe {arguments.recipe} and recipe = {file_recipe!r} in {arguments.spec}; give one"
        )
    recipe_name = arguments.recipe if arguments.recipe is not None else file_recipe
    if recipe_name is None and arguments.spec is None and all(value is None for value in options.values()):
        return SteeringSpec() if _generation_asked(arguments) else None
    if arguments.layer is not None or arguments.position is not None:
        raise UserInputError(
            "--layer and --position set the original study's edit; with a steering spec use --layers and --positions"
        )
    base = RECIPES.get(str(recipe_name)).spec() if recipe_name is not None else None
    if file_options:
        base = spec_from_options(base, **file_options)
    return spec_from_options(base, **options)


def _command_run(arguments: argparse.Namespace) -> int:
    from equiv_core.config.decoding import Decoding
    from equiv_core.config.run import RunConfig
    from equiv_core.jobs.main import run_job

    decoding = Decoding(
        arguments.do_sample,
        1.0 if arguments.temperature is None else arguments.temperature,
        0 if arguments.top_k is None else arguments.top_k,
        1.0 if arguments.top_p is None else arguments.top_p,
        arguments.seed,
        arguments.stop_at_eos,
    )
    if arguments.prompts is not None and arguments.prompt is not None:
        raise UserInputError("give --prompt or --prompts, not both")
    if arguments.padding is not None and arguments.prompts is None:
        raise UserInputError("--padding applies to a batch; give --prompts FILE too")
    config = RunConfig(
        model=arguments.model,
        device=arguments.device,
        dtype=arguments.dtype,
        prompt=DEFAULT_PROMPT if arguments.prompt is None else arguments.prompt,
        max_new_tokens=arguments.max_new_tokens,
        layer=arguments.layer,
        position=-1 if arguments.position is None else arguments.position,
        seed=arguments.seed,
        experiments=_csv(arguments.only) if arguments.only else None,
        spec=steering_spec(arguments),
        prompts=read_prompts(arguments.prompts) if arguments.prompts is not None else (),
        padding=arguments.padding,
        add_special_tokens=arguments.add_special_tokens,
        chat_template=arguments.chat_template,
        decoding=decoding,
    )
    return run_job(config, arguments.json, arguments.plot, _tracking(arguments), arguments.started)


def _command_bench(arguments: argparse.Namespace) -> int:
    from equiv_core.config.bench import BenchConfig
    from equiv_core.jobs.main import BenchOutputs, bench_job

    config = BenchConfig(
        model=arguments.model,
        device=arguments.device,
        dtype=arguments.dtype,
        arms=_csv(arguments.arms),
        new_tokens=arguments.new_tokens,
        rounds=arguments.rounds,
        warmup=arguments.warmup,
        prompt=arguments.prompt,
        layer=arguments.layer,
        seed=arguments.seed,
        max_rounds=arguments.max_rounds,
        target=arguments.target_ci / 100,
        budget_s=arguments.budget_s,
    )
    outputs = BenchOutputs(
        json=arguments.json,
        plot=None if arguments.no_plot else arguments.plot,
        pytest_benchmark_json=arguments.pytest_benchmark_json,
        attach=tuple(arguments.attach),
    )
    return bench_job(
        config,
        outputs,
        arguments.with_findings,
        not arguments.no_progress,
        _tracking(arguments),
    )


def _command_compare(arguments: argparse.Namespace) -> int:
    from equiv_core.jobs.main import compare_job

    return compare_job(arguments.run_ids, _tracking(arguments))


def _command_runs(arguments: argparse.Namespace) -> int:
    from equiv_core.jobs.main import runs_job

    if arguments.limit < 1:
        raise UserInputError(f"--limit {arguments.limit} out of range; valid: >= 1")
    return runs_job(arguments.gc, arguments.upload, arguments.limit, _tracking(arguments))


def _command_audit_cell(arguments: argparse.Namespace) -> int:
    from equiv_core.jobs.main import audit_cell_job

    pins: dict[str, str | None] = {}
    for value in arguments.pin:
        package, sep, version = value.partition("=")
        if not sep or not package:
            raise UserInputError(f"--pin takes PACKAGE=VERSION (or PACKAGE=latest), got {value!r}")
        pins[package] = None if version in ("", "latest") else version
    out = Path(arguments.out)
    return audit_cell_job(arguments.cell, _csv(arguments.models), out, _tracking(arguments), pins, arguments.source)


def _command_audit_report(arguments: argparse.Namespace) -> int:
    from equiv_core.jobs.main import audit_report_job

    from_store = arguments.tracking_uri is not None  # cells run elsewhere against one server: read them from it
    return audit_report_job(Path(arguments.results), arguments.reference, _tracking(arguments), from_store)


def _command_models(_arguments: argparse.Namespace) -> int:
    for name, info in BUILTIN_MODEL_INFO.items():
        default = " (default)" if name == DEFAULT_MODEL else ""
        print(f"{name:<18} {info.description}{default}")
    print(
        "Also: any local model directory, or a Hugging Face hub id (e.g. openai-community/gpt2) where the hub "
        "is reachable."
    )
    return EXIT_OK


def _command_recipes(_arguments: argparse.Namespace) -> int:
    from equiv_core.spec.recipes import RECIPES

    width = max(len(name) for name in RECIPES)
    for name in RECIPES:
        recipe = RECIPES.get(name)
        print(f"{name:<{width}}  {recipe.summary}")
        print(f"{'':<{width}}  spec: {recipe.spec().describe()}")
        if recipe.known_wrong:
            print(f"{'':<{width}}  the tool must flag it: coverage fails with {recipe.flags!r}")
    print("Run one with `equiv run --recipe NAME`; spec options given with it override its fields.")
    return EXIT_OK


def _add_tracking_options(parser: argparse.ArgumentParser, experiment: str, off_switch: bool = True) -> None:
    """--tracking-uri and --experiment (default ``experiment``), and --no-mlflow where logging can be skipped."""
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else the sqlite store in mlflow/)",
    )
    parser.add_argument("--experiment", default=experiment, help=f"MLflow experiment name (default: {experiment})")
    if off_switch:
        parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")


def _add_model_options(
    parser: argparse.ArgumentParser, default_model: str | None, model_help: str, default_prompt: str | None
) -> None:
    parser.add_argument("--model", default=default_model, help=model_help)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--dtype", default="float32", choices=list(DTYPE_NAMES), help="model dtype (default: float32)")
    parser.add_argument("--prompt", default=default_prompt, help=f"prompt (default: {DEFAULT_PROMPT!r})")
    parser.add_argument("--seed", type=int, default=0, help="seed for every RNG, 0..2**32-1 (default 0)")


def _add_spec_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "steering spec (any of these runs the spec findings coverage, arms_agree, cache_vs_recompute and "
        "steered_differs instead of the original study's five)"
    )
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
        help="coefficient of add / ablate (default 1; 0 must leave the output unsteered), factor of scale",
    )
    group.add_argument("--layers", default=None, help="L, L1,L2 or A:B (Python slice; negatives count from the end)")
    group.add_argument(
        "--positions", default=None, help=f"an integer, a list like 0,3, or one of {', '.join(POSITION_KINDS)}"
    )
    group.add_argument(
        "--steps",
        default=None,
        help="how the step-selector arm is written: prompt-pass, K, K:M, K:, every (default "
        "auto: iter[0] for prompt positions only, else every)",
    )
    group.add_argument(
        "--indexing",
        default=None,
        help="absolute (default): positions are token positions; literal: integer "
        "positions are indices into each pass, as `h[:, i]` in user code",
    )


def _add_generation_options(parser: argparse.ArgumentParser) -> None:
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
    group.add_argument(
        "--add-special-tokens", action="store_true", help="encode with the tokenizer's special tokens (e.g. BOS)"
    )
    group.add_argument(
        "--chat-template", action="store_true", help="wrap each prompt as a user message in the model's chat template"
    )
    group.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding (seeded by --seed)")
    group.add_argument("--temperature", type=float, default=None, help="sampling temperature (> 0, default 1)")
    group.add_argument("--top-k", type=int, default=None, help="sample from the k most likely tokens (default 0: off)")
    group.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass, in (0, 1] (default 1)")
    group.add_argument("--stop-at-eos", action="store_true", help="let generation end at EOS before --max-new-tokens")


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

    run = command("run", "run the five findings (or a steering spec's findings) and print a report")
    _add_model_options(run, DEFAULT_MODEL, "built-in name (see `equiv models`), directory or hub id", None)
    run.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, help="tokens to generate (>= 1)")
    run.add_argument(
        "--layer", type=int, default=None, help="decoder layer of findings 2-5 (default 0); finding 1 uses the last"
    )
    run.add_argument(
        "--position", type=int, default=None, help="prompt position edited in findings 2, 3, 5 (default -1)"
    )
    run.add_argument("--only", default=None, help="comma-separated finding ids to run (default: all)")
    run.add_argument("--json", default=None, metavar="PATH", help="also write the full results as JSON here")
    run.add_argument("--plot", default=None, metavar="PATH", help="draw a steering spec's coverage map (PNG) here")
    _add_spec_options(run)
    _add_generation_options(run)
    _add_tracking_options(run, DEFAULT_EXPERIMENT)
    run.set_defaults(handler=_command_run)

    bench = command("bench", "time plain / iter0 / recompute against a raw hook and unsteered")
    _add_model_options(
        bench, None, f"model (default: {DEFAULT_MODEL} on CPU, gpt2-small-random when CUDA is used)", DEFAULT_PROMPT
    )
    bench.add_argument(
        "--arms", default=",".join(BENCH_ARMS), help=f"comma-separated arms (default: all: {','.join(BENCH_ARMS)})"
    )
    bench.add_argument(
        "--new-tokens",
        type=_csv_ints,
        default=None,
        help="comma-separated sweep of new tokens (default: 8,16,32 on CPU; 8,32,128,512 on GPU)",
    )
    bench.add_argument(
        "--rounds",
        type=int,
        default=DEFAULT_MIN_ROUNDS,
        help=f"at least this many timed rounds per cell (>= 1, default {DEFAULT_MIN_ROUNDS}: the fewest that give a "
        "95%% CI of the median); more are added until --target-ci or --budget-s",
    )
    bench.add_argument(
        "--max-rounds",
        type=int,
        default=DEFAULT_MAX_ROUNDS,
        help=f"at most this many timed rounds per cell (>= --rounds, default {DEFAULT_MAX_ROUNDS})",
    )
    bench.add_argument(
        "--target-ci",
        type=float,
        default=TARGET_CI_HALF_WIDTH * 100,
        metavar="PERCENT",
        help="stop adding rounds to a cell once its median's 95%% CI is within +-PERCENT of the median "
        f"(0 < PERCENT < 100, default {TARGET_CI_HALF_WIDTH:.0%})".replace("%)", "%%)"),
    )
    bench.add_argument(
        "--budget-s",
        type=float,
        default=DEFAULT_BUDGET_S,
        metavar="SECONDS",
        help=f"seconds of timing rounds for the whole sweep, shared by size (> 0, default {DEFAULT_BUDGET_S:.0f}); "
        "cells still short of the target are flagged with the CI they reached",
    )
    bench.add_argument("--warmup", type=int, default=1, help="untimed warm-up rounds per cell (default 1)")
    bench.add_argument("--layer", type=int, default=0, help="decoder layer edited (default 0; negatives from the end)")
    bench.add_argument("--json", default=None, metavar="PATH", help="write one record per (arm, new_tokens) here")
    bench.add_argument(
        "--plot", default=DEFAULT_SWEEP_PLOT, metavar="PATH", help=f"sweep plot PNG (default: {DEFAULT_SWEEP_PLOT})"
    )
    bench.add_argument("--no-plot", action="store_true", help="do not draw the sweep plot")
    bench.add_argument(
        "--pytest-benchmark-json",
        default=None,
        metavar="PATH",
        help="also write the sweep's rounds as a pytest-benchmark JSON file (read by `pytest-benchmark compare`), "
        "logged with the run",
    )
    bench.add_argument("--no-progress", action="store_true", help="no progress bar")
    bench.add_argument(
        "--with-findings",
        action="store_true",
        help="first run the five findings on the same model (what `nox -s bench` does)",
    )
    bench.add_argument(
        "--attach",
        action="append",
        default=[],
        metavar="PATH",
        help="extra file to log as an artifact of the run; repeatable",
    )
    _add_tracking_options(bench, DEFAULT_EXPERIMENT)
    bench.set_defaults(handler=_command_bench)

    compare = command("compare", "MLflow runs side by side: verdicts, ratios, identical hashes")
    compare.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="parent run ids (default: the newest two)")
    _add_tracking_options(compare, DEFAULT_EXPERIMENT, off_switch=False)
    compare.set_defaults(handler=_command_compare)

    runs = command("runs", "list runs with their status; end orphaned runs (--gc); upload a spooled run (--upload)")
    runs.add_argument("--limit", type=int, default=20, help="top-level runs to list, newest first (default 20)")
    runs.add_argument(
        "--gc", action="store_true", help="mark RUNNING runs whose process is gone FAILED, with the reason"
    )
    runs.add_argument(
        "--upload",
        metavar="DIR",
        help="upload a run spooled when the tracking store failed mid-run (to its store, or --tracking-uri)",
    )
    _add_tracking_options(runs, DEFAULT_EXPERIMENT, off_switch=False)
    runs.set_defaults(handler=_command_runs)

    audit_cell = command("audit-cell", "(used by `nox -s audit`) audit this environment")
    audit_cell.add_argument("--cell", required=True, help="cell id, e.g. \"nnsight='0.7.0'\"")
    audit_cell.add_argument("--models", default="smollm2-135m,tiny-gpt2", help="comma-separated models")
    audit_cell.add_argument("--out", default="results/audit", help="directory for <cell>.json and <cell>.npz")
    audit_cell.add_argument(
        "--pin", action="append", default=[], help="PACKAGE=VERSION the cell asked for (recorded), repeatable"
    )
    audit_cell.add_argument(
        "--source", default="matrix", help="matrix, or the release search the cell is a probe of (e.g. bisect-nnsight)"
    )
    _add_tracking_options(audit_cell, AUDIT_EXPERIMENT)
    audit_cell.set_defaults(handler=_command_audit_cell)

    audit_report = command("audit-report", "Markdown report + MLflow table of all audit cells")
    audit_report.add_argument("--results", default="results/audit", help="directory of cell results")
    audit_report.add_argument("--reference", default="nnsight='0.8.1'", help="cell the others are compared with")
    _add_tracking_options(audit_report, AUDIT_EXPERIMENT)
    audit_report.set_defaults(handler=_command_audit_report)

    models = command("models", "list the built-in offline models")
    models.set_defaults(handler=_command_models)
    recipes = command("recipes", "list the built-in steering recipes")
    recipes.set_defaults(handler=_command_recipes)
    return parser


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
        return code if isinstance(code, int) else EXIT_OK if code is None else EXIT_BAD_INPUT
    # MLflow's INFO lines ("Creating initial MLflow database tables", ...) would surround the one-line messages;
    # MLflow reads this variable when it is imported (mlflow.utils.logging_utils, MLflow 3.x). A user's setting wins.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # When the command began, and when its process did (as the console script; in-process callers such as tests
    # have no start-up of their own to report): `equiv run` reports where its wall time went from there.
    arguments.started = CommandStart(process_started() if argv is None else time.time(), time.time())
    try:
        # SIGTERM (e.g. a CI timeout) ends runs as KILLED, like Ctrl-C, instead of leaving them RUNNING; neither
        # lands inside a tracking-store write (equiv_core.support.interrupts).
        with interrupts_handled(), _no_third_party_bars_in_a_log():
            return int(arguments.handler(arguments))
    except UserInputError as error:
        print(f"equiv: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except EnvironmentFault as error:
        if arguments.debug:
            traceback.print_exc()
        print(f"equiv: error: {error}", file=sys.stderr)
        return EXIT_ENVIRONMENT
    except KeyboardInterrupt:
        print("equiv: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`equiv recipes | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
