"""``equiv bench``: every arm checked against the raw hook, then timed; the table, JSON, sweep plot and MLflow run."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

from equiv_core.config.catalog import DEFAULT_SWEEP_PLOT
from equiv_core.config.tracking import TrackingOptions
from equiv_core.jobs.common import early_tags, existing_file, mlflow_info, open_tracker, settle
from equiv_core.support.errors import ExitStatus
from equiv_core.support.outputs import check_output, write_json, write_with
from equiv_core.support.progress import say
from equiv_core.tracking.schema import RunKind, Tag

if TYPE_CHECKING:
    from equiv_core.config.bench import BenchConfig
    from equiv_core.findings.runner import RunReport
    from equiv_core.tracking.store import TrackedRun, Tracker


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
    from equiv_core.config.bench import for_device, validate_bench_config

    valid = validate_bench_config(config)  # torch-free: a bad argument is answered before the heavy imports below
    json_path = check_output(outputs.json, "--json")
    plot_path = check_output(outputs.plot, "--plot", default=DEFAULT_SWEEP_PLOT)
    pytest_benchmark_path = check_output(outputs.pytest_benchmark_json, "--pytest-benchmark-json")
    attachments = [existing_file(path, "--attach") for path in outputs.attach]

    from equiv_core.bench.sweep import run_bench
    from equiv_core.bench.table import render_table
    from equiv_core.models.load import resolve_device
    from equiv_core.tracking import run_logging

    device = resolve_device(config.device)
    resolved = for_device(valid, cuda=device.type == "cuda")
    tracker = open_tracker(tracking)  # before any model work: an unreachable store fails fast
    tags = early_tags()
    with tracker.run(
        f"bench {resolved.model} {resolved.dtype} {device.type}", tags={Tag.KIND: RunKind.BENCH}
    ) as parent:
        parent.log(params=run_logging.bench_params(resolved), tags=tags)
        findings = _bench_findings(resolved, tracker, parent) if with_findings else None
        report = run_bench(
            resolved,
            progress=progress,
            say=say,
            on_cells=partial(run_logging.log_bench_cells, tracker, parent),
            device=device,
        )
        print(render_table(report))
        payload = {
            **report.to_dict(),
            "plot": None if plot_path is None else str(plot_path),
            "mlflow": mlflow_info(tracker, parent),
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
    return settle(tracker, parent, ExitStatus.OK if report.all_correct and findings_hold else ExitStatus.FINDING_FAILED)


def _bench_findings(config: BenchConfig, tracker: Tracker, parent: TrackedRun) -> RunReport:
    """The five findings on the model the benchmark will time, printed first and logged as child runs."""
    from equiv_core.config.run import RunConfig, validate_config
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
            validate_config(run_config),
            progress=lines.line,
            on_finding=partial(run_logging.log_finding, tracker, parent),
        )
    parent.log(
        tags={
            **run_logging.architecture_tags(report.architecture),
            Tag.FINDINGS_FINGERPRINT: report.fingerprint(),
        },
        metrics={"findings_all_hold": float(report.all_hold)},
    )
    print(render(report))
    print()
    return report
