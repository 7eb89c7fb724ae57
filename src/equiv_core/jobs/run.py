"""``equiv run``: the findings (five, or a steering spec's) on one model, printed, written as JSON, logged to MLflow."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from equiv_core.config.tracking import TrackingOptions
from equiv_core.jobs.common import early_tags, mlflow_info, open_tracker, settle
from equiv_core.support.errors import ExitStatus, UserInputError
from equiv_core.support.outputs import check_output, write_json, write_with
from equiv_core.support.progress import say
from equiv_core.support.walltime import CommandStart, breakdown
from equiv_core.tracking.schema import RunKind, Tag

if TYPE_CHECKING:
    from equiv_core.config.run import RunConfig
    from equiv_core.findings.runner import RunReport
    from equiv_core.tracking.store import TrackedRun


def run_job(
    config: RunConfig,
    json_out: str | None,
    plot_out: str | None,
    tracking: TrackingOptions,
    start: CommandStart | None = None,
) -> int:
    """``equiv run``: the findings (five, or a steering spec's), printed, written as JSON, logged to MLflow; then
    one line saying where the wall time went (:mod:`equiv_core.support.walltime`)."""
    from equiv_core.config.run import ValidRunConfig, validate_config

    valid = validate_config(config)  # torch-free: a bad argument is answered before the heavy imports below
    json_path = check_output(json_out, "--json")
    plot_path = check_output(plot_out, "--plot")
    if plot_path is not None and config.spec is None:
        raise UserInputError("--plot draws a steering spec's coverage map; give a spec (--recipe, --op, ...) too")

    import torch

    steering = None
    if config.check is not None:  # the user's file imports before any model loads: its faults are exit 2 at once
        from equiv_core.usercode.forms import load_user_steering

        steering = load_user_steering(config.check)
        # the form as told (by --form or the signature): what the run records
        config = valid = ValidRunConfig(replace(config, check=steering.target))

    from equiv_core.findings.report import render
    from equiv_core.findings.runner import run_findings
    from equiv_core.models.load import resolve_device
    from equiv_core.support.machine_load import LoadMonitor
    from equiv_core.support.progress import Progress
    from equiv_core.tracking import run_logging

    imports_done = time.time()
    start = start or CommandStart(imports_done, imports_done)
    load = LoadMonitor(threads=torch.get_num_threads())  # is the machine busy? said early in the run if so
    device = resolve_device(config.device)  # CUDA asked for where there is none: exit 2 before an MLflow run exists
    tracker = open_tracker(tracking)  # before any model work: an unreachable store fails fast

    kind = RunKind.RUN if config.check is None else RunKind.CHECK
    with tracker.run(run_logging.run_name(config), tags={Tag.KIND: kind}) as parent:
        if parent.enabled:
            run_logging.prefetch_environment_manifest()
        parent.log(params=run_logging.run_params(config), tags=early_tags())
        lines = Progress(say, bar=False)  # one line per step, and a watchdog line in a long one (issue 18)
        with lines.watchdog():
            report = run_findings(
                valid,
                progress=lines.line,
                on_finding=partial(run_logging.log_finding, tracker, parent),
                load=load,
                device=device,
                steering=steering,
            )
        payload = {**report.to_dict(), "mlflow": mlflow_info(tracker, parent)}
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
    return settle(tracker, parent, ExitStatus.OK if report.all_hold else ExitStatus.FINDING_FAILED)


def _coverage_outputs(report: RunReport, plot_path: Path | None, run: TrackedRun, payload: dict[str, Any]) -> None:
    """The coverage map as a picture (to ``plot_path`` and MLflow) and as data (MLflow ``coverage.json``)."""
    from equiv_core.findings.coverage_plot import plot_coverage
    from equiv_core.findings.spec.coverage import CoverageEvidence  # equiv check's is one too

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
