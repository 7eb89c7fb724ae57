"""The commands' work, one function each: check the outputs and the tracking store first, run, report, log.

The command line (:mod:`equiv_core.cli.main`) only parses arguments into the typed configs these take. Each returns
the exit status: 0 when everything holds, 1 when a finding fails, 3 when the tracking store failed mid-run (the
results are spooled); bad input raises UserInputError (exit 2), other environment faults EnvironmentFault (3).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from equiv_core.config.catalog import DEFAULT_EXPERIMENT
from equiv_core.support.errors import EnvironmentFault, UserInputError
from equiv_core.support.outputs import check_output, write_json, write_with
from equiv_core.support.walltime import CommandStart, breakdown

if TYPE_CHECKING:
    from equiv_core.audit.record import CellRecord
    from equiv_core.config.bench import BenchConfig
    from equiv_core.config.run import RunConfig
    from equiv_core.findings.runner import RunReport
    from equiv_core.tracking.store import TrackedRun, Tracker

EXIT_OK, EXIT_FINDING_FAILED, EXIT_BAD_INPUT, EXIT_ENVIRONMENT = 0, 1, 2, 3
DEFAULT_SWEEP_PLOT = "results/bench-sweep.png"


def say(message: str) -> None:
    """Progress and status lines go to stderr, so stdout holds only the report."""
    print(f"equiv: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class TrackingOptions:
    """Where runs are logged: ``enabled`` False is ``--no-mlflow``; ``uri`` None means the default store."""

    enabled: bool = True
    uri: str | None = None
    experiment: str = DEFAULT_EXPERIMENT

    def open(self) -> Tracker:
        from equiv_core.tracking.store import open_tracker

        return open_tracker(self.enabled, self.uri, self.experiment, say)


def existing_file(value: str, flag: str) -> Path:
    path = Path(value)
    if not path.is_file():
        raise UserInputError(f"{flag} {value!r}: no such file")
    return path


def _early_tags() -> dict[str, Any]:
    """Version tags known before the model loads (no device query: CUDA must not start before determinism is set),
    so even a run that dies while loading says where it ran."""
    from equiv_core.models.provenance import version_info
    from equiv_core.tracking.run_logging import environment_tags

    return environment_tags(version_info())


def _mlflow_info(tracker: Tracker, run: TrackedRun) -> dict[str, Any] | None:
    if not run.run_id:
        return None
    return {"tracking_uri": tracker.uri, "experiment": tracker.experiment_name, "run_id": run.run_id}


def _settle(tracker: Tracker, run: TrackedRun | None, status: int) -> int:
    """Say where the run was logged and return ``status``; when the store failed mid-run, spool what it missed,
    say how to upload it, and return :data:`EXIT_ENVIRONMENT`."""
    try:
        spooled = tracker.settle()
    except OSError as error:
        raise EnvironmentFault(
            f"the MLflow store {tracker.uri} failed during the run ({tracker.failure}) and its results could not be "
            f"kept locally either: {error.strerror or error}; the report above and any --json file are all there "
            f"is: free disk space for the store, or point EQUIV_MLFLOW_DIR / --tracking-uri elsewhere"
        ) from None
    if spooled is not None:
        say(
            f"error: the MLflow store {tracker.uri} failed during the run ({tracker.failure}); the run's results are "
            f"kept in {spooled}: upload them when the store is back with `equiv runs --upload {spooled}`"
        )
        return EXIT_ENVIRONMENT
    if run is not None and run.run_id:
        say(
            f"logged MLflow run {run.run_id} ({run.name!r}) to {tracker.uri}, experiment "
            f"{tracker.experiment_name!r}; compare with `equiv compare`"
        )
    return status


def run_job(
    config: RunConfig,
    json_out: str | None,
    plot_out: str | None,
    tracking: TrackingOptions,
    start: CommandStart | None = None,
) -> int:
    """``equiv run``: the findings (five, or a steering spec's), printed, written as JSON, logged to MLflow; then
    one line saying where the wall time went (:mod:`equiv_core.support.walltime`)."""
    from equiv_core.config.run import validate_config

    validate_config(config)  # torch-free: a bad argument is answered before the heavy imports below
    json_path = check_output(json_out, "--json")
    plot_path = check_output(plot_out, "--plot")
    if plot_path is not None and config.spec is None:
        raise UserInputError("--plot draws a steering spec's coverage map; give a spec (--recipe, --op, ...) too")

    import torch

    from equiv_core.findings.report import render
    from equiv_core.findings.runner import run_findings
    from equiv_core.models.load import resolve_device
    from equiv_core.support.machine_load import LoadMonitor
    from equiv_core.support.progress import Progress
    from equiv_core.tracking import run_logging

    imports_done = time.time()
    start = start or CommandStart(imports_done, imports_done)
    load = LoadMonitor(threads=torch.get_num_threads())  # is the machine busy? said early in the run if so
    resolve_device(config.device)  # CUDA asked for where there is none: exit 2 before an MLflow run exists
    tracker = tracking.open()  # before any model work: an unreachable store fails fast

    with tracker.run(run_logging.run_name(config), tags={"kind": "run"}) as parent:
        if parent.enabled:
            run_logging.prefetch_environment_manifest()
        parent.log(params=run_logging.run_params(config), tags=_early_tags())
        lines = Progress(say, bar=False)  # one line per step, and a watchdog line in a long one (issue 18)
        with lines.watchdog():
            report = run_findings(
                config, progress=lines.line, on_finding=partial(run_logging.log_finding, tracker, parent), load=load
            )
        payload = {**report.to_dict(), "mlflow": _mlflow_info(tracker, parent)}
        if report.spec is not None:
            _coverage_outputs(report, plot_path, parent, payload)
        run_logging.log_run_report(parent, report, payload)
        spent = breakdown(start, imports_done, report.timings, tracker.seconds)
        payload["time_breakdown"] = spent.to_dict()
        parent.log(metrics={f"time.{key}": value for key, value in spent.to_dict().items()})
    print(render(report))
    say(spent.render())
    if json_path is not None:
        write_json(json_path, payload)
        say(f"wrote {json_path}")
    return _settle(tracker, parent, EXIT_OK if report.all_hold else EXIT_FINDING_FAILED)


def _coverage_outputs(report: RunReport, plot_path: Path | None, run: TrackedRun, payload: dict[str, Any]) -> None:
    """The coverage map as a picture (to ``plot_path`` and MLflow) and as data (MLflow ``coverage.json``)."""
    from equiv_core.findings.coverage_plot import plot_coverage
    from equiv_core.findings.spec.coverage import CoverageEvidence

    evidence = next((f.evidence for f in report.findings if isinstance(f.evidence, CoverageEvidence)), None)
    if evidence is None or (plot_path is None and not run.run_id):
        return  # nothing asked for the picture: drawing it costs about a second
    descriptions = {name: arm.description for name, arm in evidence.arms.items()}
    title = f"{report.config.model}: {report.spec.spec.describe() if report.spec else ''}"
    with tempfile.TemporaryDirectory() as scratch:
        drawn = Path(scratch) / "coverage.png"
        plot_coverage(evidence.checks, descriptions, evidence.new_tokens, title, drawn)
        run.log_file(drawn)
        if plot_path is not None:
            write_with(plot_path, lambda staging: shutil.copyfile(drawn, staging))
    run.log_json(evidence.to_dict(), "coverage.json")
    if plot_path is not None:
        payload["coverage_plot"] = str(plot_path)
        say(f"wrote {plot_path}")


@dataclass(frozen=True, slots=True)
class BenchOutputs:
    """The files ``equiv bench`` writes (None: not written) and the extra files it logs with the run."""

    json: str | None = None
    plot: str | None = DEFAULT_SWEEP_PLOT
    pytest_benchmark_json: str | None = None
    attach: tuple[str, ...] = ()


def bench_job(
    config: BenchConfig, outputs: BenchOutputs, with_findings: bool, progress: bool, tracking: TrackingOptions
) -> int:
    """``equiv bench``: every arm checked against the hook, then timed; table, JSON, sweep plot, MLflow."""
    from equiv_core.config.bench import validate_bench_config

    validate_bench_config(config)  # torch-free: a bad argument is answered before the heavy imports below
    json_path = check_output(outputs.json, "--json")
    plot_path = check_output(outputs.plot, "--plot", default=DEFAULT_SWEEP_PLOT)
    pytest_benchmark_path = check_output(outputs.pytest_benchmark_json, "--pytest-benchmark-json")
    attachments = [existing_file(path, "--attach") for path in outputs.attach]

    from equiv_core.bench.report import render_table
    from equiv_core.bench.sweep import run_bench
    from equiv_core.models.load import resolve_device
    from equiv_core.tracking import run_logging

    device = resolve_device(config.device)
    resolved = config.resolved(cuda=device.type == "cuda")
    tracker = tracking.open()  # before any model work: an unreachable store fails fast
    tags = _early_tags()
    with tracker.run(f"bench {resolved.model} {resolved.dtype} {device.type}", tags={"kind": "bench"}) as parent:
        parent.log(params=run_logging.bench_params(resolved), tags=tags)
        findings = _bench_findings(resolved, tracker, parent) if with_findings else None
        report = run_bench(
            resolved,
            progress=progress,
            say=say,
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

            write_with(plot_path, lambda staging: plot_sweep(report, staging))
            parent.log_file(plot_path)
            say(f"wrote {plot_path}")
        run_logging.log_bench_report(parent, report, payload)
        if pytest_benchmark_path is not None:
            from equiv_core.bench.pytest_benchmark_json import pytest_benchmark_document

            write_json(pytest_benchmark_path, pytest_benchmark_document(report))
            parent.log_file(pytest_benchmark_path, "attachments")
            say(f"wrote {pytest_benchmark_path} (pytest-benchmark format, from the sweep's rounds)")
        for attachment in attachments:
            parent.log_file(attachment, "attachments")
    if json_path is not None:
        write_json(json_path, payload)
        say(f"wrote {json_path}")
    findings_hold = findings is None or findings.all_hold
    return _settle(tracker, parent, EXIT_OK if report.all_correct and findings_hold else EXIT_FINDING_FAILED)


def _bench_findings(config: BenchConfig, tracker: Tracker, parent: TrackedRun) -> RunReport:
    """The five findings on the model the benchmark will time, printed first and logged as child runs."""
    from equiv_core.config.run import RunConfig
    from equiv_core.findings.report import render
    from equiv_core.findings.runner import run_findings
    from equiv_core.support.progress import Progress
    from equiv_core.tracking import run_logging

    run_config = RunConfig(
        model=config.model or "",
        device=config.device,
        dtype=config.dtype,
        prompt=config.prompt,
        layer=config.layer,
        seed=config.seed,
    )
    lines = Progress(say, bar=False)
    with lines.watchdog():
        report = run_findings(
            run_config, progress=lines.line, on_finding=partial(run_logging.log_finding, tracker, parent)
        )
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


def compare_job(run_ids: list[str], tracking: TrackingOptions) -> int:
    """``equiv compare``: MLflow runs side by side."""
    from equiv_core.tracking.compare import compare_runs, latest_parent_runs

    tracker = TrackingOptions(True, tracking.uri, tracking.experiment).open()
    if run_ids:
        chosen, note = run_ids, ""
    else:
        chosen, note = latest_parent_runs(tracker)
    if len(chosen) < 2:
        raise UserInputError(f"give at least 2 run ids to compare, got {len(chosen)}")
    if note:
        say(note)
    print(compare_runs(tracker, chosen))
    return EXIT_OK


def runs_job(gc: bool, upload: str | None, limit: int, tracking: TrackingOptions) -> int:
    """``equiv runs``: the newest top-level runs and their status, orphaned ones marked; ``gc`` ends every
    orphaned run FAILED with the reason; ``upload`` replays a directory spooled when a store failed mid-run."""
    from equiv_core.support.tables import text_table

    if upload is not None:
        return _upload(Path(upload), tracking)
    tracker = TrackingOptions(True, tracking.uri, tracking.experiment).open()
    runs = tracker.runs()
    if gc:
        orphans = [run for run in runs if run.orphaned]
        for run in orphans:
            tracker.end_orphan(run)
        say(
            f"marked {len(orphans)} orphaned run(s) FAILED"
            + (f": {', '.join(r.run_id for r in orphans)}" if orphans else "")
        )
        runs = tracker.runs()
    listed = [run for run in runs if not run.parent][:limit]
    rows = [["run id", "started (UTC)", "status", "name", "note"]]
    for run in listed:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(run.start_ms / 1000))
        status = f"{run.status} (orphaned)" if run.orphaned else run.status
        rows.append([run.run_id, started, status, run.name, run.orphaned])
    print("\n".join(text_table(rows)) if listed else f"no runs in experiment {tracker.experiment_name!r}")
    if any(run.orphaned for run in runs):
        say("orphaned runs were left RUNNING by a process that is gone; `equiv runs --gc` marks them FAILED")
    return EXIT_OK


def _upload(directory: Path, tracking: TrackingOptions) -> int:
    from equiv_core.tracking.spool import mark_uploaded, read_spool

    spooled = read_spool(directory)
    tracker = TrackingOptions(True, tracking.uri or spooled.tracking_uri, spooled.experiment).open()
    run_ids = tracker.upload(spooled)
    mark_uploaded(spooled, run_ids, tracker.uri)
    say(
        f"uploaded {directory} to {tracker.uri}, experiment {tracker.experiment_name!r}, as run(s) {', '.join(run_ids)}"
    )
    return EXIT_OK


def audit_cell_job(
    cell: str,
    models: tuple[str, ...],
    out: Path,
    tracking: TrackingOptions,
    pins: dict[str, str | None],
    source: str = "matrix",
) -> int:
    """``equiv audit-cell``: audit this environment; a finding that fails is a result, not a failed cell."""
    from equiv_core.audit.cell import run_cell

    tracker = tracking.open()
    record = run_cell(cell, models, out, tracker, say, pins, source)
    failing = [
        f"{model}/{finding}"
        for model, result in record.models.items()
        for finding, verdict in result.findings.items()
        if verdict.verdict != "PASS"
    ]
    say(f"cell {cell}: {'all findings PASS' if not failing else 'not PASS: ' + ', '.join(failing)}")
    return _settle(tracker, None, EXIT_OK)


def audit_report_job(results: Path, reference: str, tracking: TrackingOptions, from_store: bool = False) -> int:
    """``equiv audit-report``: the Markdown report and status.json of every cell, logged with its table.

    ``from_store``: first fetch every cell's newest run from the tracking store's audit experiment into ``results``
    (cells run on other machines against one server); else the cell files already in ``results``."""
    from equiv_core.audit.record import read_cells
    from equiv_core.audit.report import write_report
    from equiv_core.tracking.store import NullTracker

    tracker = tracking.open()
    if from_store:
        from equiv_core.audit.mlflow_source import download_cells

        if isinstance(tracker, NullTracker):
            raise UserInputError("--tracking-uri reads the cells from a tracking store; drop --no-mlflow")
        fetched = download_cells(tracker, results)
        say(f"read {len(fetched)} audit cells from {tracker.uri}, experiment {tracker.experiment_name!r}")
    try:
        cells = read_cells(results) if results.is_dir() else []
    except ValueError as error:
        raise UserInputError(f"{error}; re-run that cell, or remove the file") from None
    if not cells:
        where = f"the experiment {tracker.experiment_name!r} at {tracker.uri}" if from_store else repr(str(results))
        raise UserInputError(f"no audit cell results in {where}; run `.venv/bin/nox -s audit` first")
    if not from_store:
        _log_unsupported_cells(tracker, results, cells)
    path, rows = write_report(results, reference)
    with tracker.run("audit report", tags={"kind": "audit-report"}) as run:
        run.log(params={"reference_cell": reference, "cells": len({row["cell"] for row in rows})})
        run.log_file(path)
        run.log_file(results / "status.json")
        run.log_table(rows, "audit_table.json")
    print(path.read_text())
    say(f"wrote {path} and {results / 'status.json'}")
    return _settle(tracker, run, EXIT_OK)


def _log_unsupported_cells(tracker: Tracker, directory: Path, cells: list[CellRecord]) -> None:
    """Cells that could not install or import never reached MLflow themselves: log a run for each, once (the run
    id is written back into the cell's file in ``directory``)."""
    from dataclasses import replace

    for cell in cells:
        if cell.status == "ran" or cell.mlflow_run_id:
            continue
        with tracker.run(f"audit {cell.cell}", tags={"kind": "audit-cell", "cell": cell.cell}) as run:
            run.log(
                params={"cell": cell.cell},
                tags={
                    "status": cell.status,
                    "reason": cell.reason,
                    **{f"{package}_pin": version or "latest" for package, version in cell.pins.items()},
                },
            )
        if run.run_id:
            replace(cell, mlflow_run_id=run.run_id).write(directory)
