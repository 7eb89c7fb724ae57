"""The ``equiv`` command line: ``equiv run`` (the five findings) and ``equiv models``.

Exit status: 0 when every finding holds, 1 when one fails, 2 on bad input (one line on stderr, nothing
written).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from equiv_core import run_logging
from equiv_core.errors import UserInputError

if TYPE_CHECKING:
    from equiv_core.bench.sweep import BenchConfig
    from equiv_core.runner import RunReport
    from equiv_core.tracking import TrackedRun, Tracker

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
    tracker = _tracker(arguments)  # before any model work: an unreachable store fails fast
    with tracker.run(f"run {config.model}", tags={"kind": "run"}) as parent:
        parent.log(params=run_logging.run_params(config), tags=_early_tags(config.device))
        report = run_findings(config, progress=_progress, on_finding=partial(run_logging.log_finding, tracker, parent))
        payload = {**report.to_dict(), "mlflow": _mlflow_info(tracker, parent)}
        run_logging.log_run_report(parent, report, payload)
    print(render(report))
    if json_path is not None:
        write_json_atomically(json_path, payload)
        _progress(f"wrote {json_path}")
    _say_logged(tracker, parent)
    return EXIT_OK if report.all_hold else EXIT_FINDING_FAILED


def _tracker(arguments: argparse.Namespace) -> Tracker:
    from equiv_core.tracking import open_tracker

    return open_tracker(not arguments.no_mlflow, arguments.tracking_uri, arguments.experiment)


def _early_tags(device: str) -> dict[str, Any]:
    """Version tags known before the model loads, so even a run that dies while loading says where it ran."""
    from equiv_core.models import resolve_device
    from equiv_core.provenance import environment_info

    return run_logging.environment_tags(environment_info(resolve_device(device)))


def _mlflow_info(tracker: Tracker, run: TrackedRun) -> dict[str, Any] | None:
    if not run.run_id:
        return None
    return {"tracking_uri": tracker.uri, "experiment": tracker.experiment_name, "run_id": run.run_id}


def _say_logged(tracker: Tracker, run: TrackedRun) -> None:
    if run.run_id:
        _progress(
            f"logged MLflow run {run.run_id} ({run.name!r}) to {tracker.uri}, experiment "
            f"{tracker.experiment_name!r}; compare with `equiv compare`"
        )


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
    attachments = [_existing_file(path) for path in arguments.attach]
    validate_bench_config(config)
    resolved = config.resolved()
    tracker = _tracker(arguments)  # before any model work: an unreachable store fails fast
    tags = _early_tags(resolved.device)
    with tracker.run(f"bench {resolved.model} {resolved.dtype} {tags.get('device')}", tags={"kind": "bench"}) as parent:
        parent.log(params=run_logging.bench_params(resolved), tags=tags)
        findings = _bench_findings(resolved, tracker, parent) if arguments.with_findings else None
        report = run_bench(
            resolved,
            progress=not arguments.no_progress,
            say=_progress,
            on_cells=partial(run_logging.log_bench_cells, tracker, parent),
        )
        print(render_table(report))
        payload = {
            **report.to_dict(),
            "plot": None if plot_path is None else str(plot_path),
            "mlflow": _mlflow_info(tracker, parent),
        }
        if findings is not None:
            payload["findings_run"] = findings.to_dict()
        if plot_path is not None:
            from equiv_core.bench.plot import plot_sweep

            plot_sweep(report, plot_path)
            parent.log_file(plot_path)
            _progress(f"wrote {plot_path}")
        run_logging.log_bench_report(parent, report, payload)
        for attachment in attachments:
            parent.log_file(attachment, "attachments")
    if json_path is not None:
        write_json_atomically(json_path, payload)
        _progress(f"wrote {json_path}")
    _say_logged(tracker, parent)
    findings_hold = findings is None or findings.all_hold
    return EXIT_OK if report.all_correct and findings_hold else EXIT_FINDING_FAILED


def _existing_file(value: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise UserInputError(f"--attach {value!r}: no such file")
    return path


def _bench_findings(config: BenchConfig, tracker: Tracker, parent: TrackedRun) -> RunReport:
    """The five findings on the model the benchmark will time, printed first and logged as child runs."""
    from equiv_core.report import render
    from equiv_core.runner import RunConfig, run_findings

    run_config = RunConfig(
        model=config.model or "",
        device=config.device,
        dtype=config.dtype,
        prompt=config.prompt,
        layer=config.layer,
        seed=config.seed,
    )
    report = run_findings(run_config, progress=_progress, on_finding=partial(run_logging.log_finding, tracker, parent))
    parent.log(
        tags={
            "block_output_form": report.architecture["block_output_form"],
            "findings_fingerprint": report.fingerprint(),
        },
        metrics={"findings_all_hold": float(report.all_hold)},
    )
    print(render(report))
    print()
    return report


def _command_compare(arguments: argparse.Namespace) -> int:
    from equiv_core.compare import compare_runs, latest_parent_runs
    from equiv_core.tracking import open_tracker

    tracker = open_tracker(True, arguments.tracking_uri, arguments.experiment)
    run_ids = arguments.run_ids or latest_parent_runs(tracker)
    if len(run_ids) < 2:
        raise UserInputError(f"give at least 2 run ids to compare, got {len(run_ids)}")
    print(compare_runs(tracker, run_ids))
    return EXIT_OK


def _command_audit_cell(arguments: argparse.Namespace) -> int:
    from equiv_core.audit.cell import run_cell

    tracker = _tracker(arguments)
    models = tuple(model.strip() for model in arguments.models.split(",") if model.strip())
    payload = run_cell(arguments.cell, models, Path(arguments.out), tracker, _progress)
    failing = [
        f"{model}/{finding}"
        for model, result in payload["models"].items()
        for finding, verdict in result["findings"].items()
        if verdict["verdict"] != "PASS"
    ]
    _progress(f"cell {arguments.cell}: {'all findings PASS' if not failing else 'not PASS: ' + ', '.join(failing)}")
    return EXIT_OK  # a finding that fails is a result of the audit, not a failure of the cell


def _command_audit_report(arguments: argparse.Namespace) -> int:
    from equiv_core.audit.report import write_report

    directory = Path(arguments.results)
    if not directory.is_dir() or not any(directory.glob("*.json")):
        raise UserInputError(f"no audit cell results in {str(directory)!r}; run `python3 -m nox -s audit` first")
    tracker = _tracker(arguments)
    _log_unsupported_cells(tracker, directory)
    path, rows = write_report(directory, arguments.reference)
    with tracker.run("audit report", tags={"kind": "audit-report"}) as run:
        run.log(params={"reference_cell": arguments.reference, "cells": len({row["cell"] for row in rows})})
        run.log_file(path)
        run.log_table(rows, "audit_table.json")
    print(path.read_text())
    _progress(f"wrote {path}")
    _say_logged(tracker, run)
    return EXIT_OK


def _log_unsupported_cells(tracker: Tracker, directory: Path) -> None:
    """Cells that could not install or import never reached MLflow themselves: log a run for each, once."""
    for path in sorted(directory.glob("*.json")):
        cell = json.loads(path.read_text())
        if cell["status"] == "ran" or cell.get("mlflow_run_id"):
            continue
        with tracker.run(f"audit {cell['cell']}", tags={"kind": "audit-cell", "cell": cell["cell"]}) as run:
            run.log(
                params={"cell": cell["cell"]},
                tags={
                    "status": cell["status"],
                    "reason": cell["reason"],
                    **{f"{k}_pin": v for k, v in cell.get("pins", {}).items()},
                },
            )
        if run.run_id:
            write_json_atomically(path, {**cell, "mlflow_run_id": run.run_id})


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


def build_parser() -> argparse.ArgumentParser:
    from equiv_core.experiments.base import DEFAULT_MAX_NEW_TOKENS, DEFAULT_PROMPT
    from equiv_core.models import DEFAULT_MODEL, DTYPES
    from equiv_core.tracking import AUDIT_EXPERIMENT, DEFAULT_EXPERIMENT

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
    _add_tracking_options(run, DEFAULT_EXPERIMENT)
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
    bench.add_argument(
        "--attach",
        action="append",
        default=[],
        metavar="PATH",
        help="extra file to log as an artifact of the run (e.g. a pytest-benchmark JSON); repeatable",
    )
    _add_tracking_options(bench, DEFAULT_EXPERIMENT)
    bench.set_defaults(handler=_command_bench)

    compare = commands.add_parser("compare", help="MLflow runs side by side: verdicts, ratios, identical hashes")
    compare.add_argument("run_ids", nargs="*", metavar="RUN_ID", help="parent run ids (default: the newest two)")
    _add_tracking_options(compare, DEFAULT_EXPERIMENT, off_switch=False)
    compare.set_defaults(handler=_command_compare)

    audit_cell = commands.add_parser("audit-cell", help="(used by `nox -s audit`) audit this environment")
    audit_cell.add_argument("--cell", required=True, help="cell id, e.g. \"nnsight='0.7.0'\"")
    audit_cell.add_argument("--models", default="smollm2-135m,tiny-gpt2", help="comma-separated models")
    audit_cell.add_argument("--out", default="results/audit", help="directory for <cell>.json and <cell>.npz")
    _add_tracking_options(audit_cell, AUDIT_EXPERIMENT)
    audit_cell.set_defaults(handler=_command_audit_cell)

    audit_report = commands.add_parser("audit-report", help="Markdown report + MLflow table of all audit cells")
    audit_report.add_argument("--results", default="results/audit", help="directory of cell results")
    audit_report.add_argument("--reference", default="nnsight='0.8.1'", help="cell the others are compared with")
    _add_tracking_options(audit_report, AUDIT_EXPERIMENT)
    audit_report.set_defaults(handler=_command_audit_report)

    models = commands.add_parser("models", help="list the built-in offline models")
    models.set_defaults(handler=_command_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``equiv`` console script: returns the exit status (also for ``--help`` and usage
    errors, which argparse reports by raising SystemExit)."""
    try:
        arguments = build_parser().parse_args(argv)
    except SystemExit as exit_request:
        code = exit_request.code
        return code if isinstance(code, int) else EXIT_OK if code is None else EXIT_BAD_INPUT
    # SIGTERM (e.g. a CI timeout) ends runs as KILLED, like Ctrl-C, instead of leaving them RUNNING.
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(arguments.handler(arguments))
    except UserInputError as error:
        print(f"equiv: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("equiv: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminate(_signal: int, _frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    raise SystemExit(main())
