"""What goes into MLflow for ``equiv run`` and ``equiv bench``: params, tags, metrics and artifacts.

Mechanics (stores, run lifecycle) live in :mod:`equiv_core.tracking.store`; this module only decides content, so
the runner and the benchmark stay free of MLflow.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import threading
from pathlib import Path
from typing import Any

from equiv_core.bench.results import ArmResult, BenchReport
from equiv_core.config.bench import BenchConfig
from equiv_core.config.run import RunConfig
from equiv_core.findings.finding import FindingResult
from equiv_core.findings.runner import RunReport
from equiv_core.models.adapters import Adapter
from equiv_core.models.architecture import Architecture
from equiv_core.tracking.schema import ENVIRONMENT_TAGS, Metric, Param, RunKind, Tag
from equiv_core.tracking.store import Outcome, TrackedRun, Tracker

FINDINGS_FAILED_METRIC = "findings_failed"  # a numeric column to sort and filter runs by in the MLflow UI


def ids_sha256(ids: list[int] | tuple[int, ...]) -> str:
    """SHA-256 of a token id sequence, for bit-for-bit comparison of runs in the MLflow UI."""
    return hashlib.sha256(json.dumps(list(ids)).encode()).hexdigest()


def environment_tags(environment: dict[str, Any]) -> dict[str, Any]:
    return {key: environment.get(key) for key in ENVIRONMENT_TAGS if environment.get(key) is not None}


def architecture_tags(architecture: Architecture) -> dict[str, str]:
    """What the loaded model's layout means for a result: its decoder block's output form and its attention kernel
    (``unset`` where the model records none)."""
    return {
        Tag.BLOCK_OUTPUT_FORM: architecture.block_output_form,
        Tag.ATTN_IMPLEMENTATION: architecture.attn_implementation or "unset",
    }


def determinism_tags(determinism: dict[str, Any], prefix: str = "determinism") -> dict[str, Any]:
    return {f"{prefix}.{key}": value for key, value in determinism.items()}


def run_name(config: RunConfig) -> str:
    """What an ``equiv run`` ran, as its MLflow run name (the verdict is added when it ends, see
    :meth:`TrackedRun.conclude`): ``run smollm2-135m`` for the five findings, ``run actadd-all smollm2-135m`` for a
    recipe, ``run add@L6 smollm2-135m`` for another spec, ``... 4 prompts`` for a batch; ``equiv check``'s:
    ``check mine.py:steer actadd-all smollm2-135m``."""
    from equiv_core.spec.recipes import RECIPES

    words = ["run"] if config.check is None else ["check", f"{Path(config.check.path).name}:{config.check.name}"]
    if config.spec is not None:
        recipe = next((name for name in RECIPES.names() if RECIPES.get(name).spec() == config.spec), None)
        words.append(recipe or f"{config.spec.op}@L{config.spec.layers.text}")
    words.append(config.model)
    if len(config.prompt_list) > 1:
        words.append(f"{len(config.prompt_list)} prompts")
    return " ".join(words)


def input_params(prompts: tuple[str, ...]) -> dict[str, Any]:
    """What a run generated from: the prompt (a batch: its size, the prompts being too long for a param) and a
    hash of every prompt, so ``equiv compare`` tells runs on the same input from others."""
    return {
        "prompt": prompts[0] if len(prompts) == 1 else f"batch of {len(prompts)} prompts",
        "batch_size": len(prompts),
        "prompts_sha256": hashlib.sha256(json.dumps(list(prompts)).encode()).hexdigest(),
    }


def run_params(config: RunConfig) -> dict[str, Any]:
    """The params of an ``equiv run`` parent run, known before any model work: everything that decides what it
    generates and judges."""
    checked = {} if config.check is None else {"checked": config.check.describe(), "form": config.check.form}
    return {
        "command": "run" if config.check is None else "check",
        **checked,
        "model": config.model,
        **input_params(config.prompt_list),
        "layer": config.layer,
        "position": config.position,
        "edit": "zero" if config.spec is None else config.spec.describe(),
        "max_new_tokens": config.max_new_tokens,
        "dtype": config.dtype,
        "device": config.device,
        "seed": config.seed,
        "decoding": config.decoding.describe(),
        "padding": config.padding or "tokenizer default",
        "add_special_tokens": config.add_special_tokens,
        "chat_template": config.chat_template,
        "experiments": ",".join(config.findings),
        **({} if config.spec is None else {f"spec.{key}": value for key, value in config.spec.to_dict().items()}),
    }


def bench_params(config: BenchConfig) -> dict[str, Any]:
    """The params of an ``equiv bench`` parent run (device defaults already resolved)."""
    return {
        "command": "bench",
        "model": config.model,
        **input_params((config.prompt,)),
        "layer": config.layer,
        "position": -1,
        "edit": "zero",
        "new_tokens": ",".join(map(str, config.new_tokens or ())),
        "dtype": config.dtype,
        "device": config.device,
        "seed": config.seed,
        "rounds": config.rounds,
        "max_rounds": config.max_rounds,
        "target_ci_half_width": config.target,
        "budget_s": config.budget_s,
        "warmup": config.warmup,
        "arms": ",".join(config.arms),
    }


def _finding_hashes(finding: FindingResult) -> dict[str, str]:
    """Hashes of the ids and logits of every generation in a finding's evidence, for cross-run comparison."""
    hashes: dict[str, str] = {}
    for arm, summary in finding.evidence.generations().items():
        hashes[f"{arm}.ids_sha256"] = ids_sha256(summary.generated_ids)
        if summary.logits_sha256 is not None:
            hashes[f"{arm}.logits_sha256"] = summary.logits_sha256
    return hashes


def log_finding(tracker: Tracker, parent: TrackedRun, finding: FindingResult, seconds: float) -> None:
    """A child run for one finding, logged as soon as the finding finishes (kept if the run dies later)."""
    with tracker.run(f"finding: {finding.id}", parent=parent, tags={Tag.KIND: RunKind.FINDING}) as child:
        metrics: dict[str, float] = {"holds": float(finding.holds), "seconds": seconds, **finding.evidence.metrics()}
        child.log(
            params={Param.FINDING: finding.id, **finding.config.params()},
            metrics=metrics,
            tags={
                Tag.VERDICT: finding.verdict,
                Tag.MESSAGE: finding.message,
                **_finding_hashes(finding),
            },
        )
        child.log_json(finding.to_dict(), "finding.json")
        if finding.counts:  # a finding this input cannot test (NOT APPLICABLE) reaches no verdict
            child.conclude(Outcome(() if finding.holds else (finding.id,), finding.verdict))
    parent.log(
        tags={f"finding.{finding.id}": finding.verdict},
        metrics={f"holds.{finding.id}": float(finding.holds)},
    )


_MANIFEST_LOCK = threading.Lock()  # one manifest per process, even when a prefetch is still building it


def prefetch_environment_manifest() -> None:
    """Start building :func:`environment_manifest` in a background thread. Most of its ~0.7 s is torch's
    collect_env waiting on about ten subprocesses (lscpu, gcc, nvidia-smi, ...): that wait overlaps the run's model
    work instead of adding to it. A later :func:`environment_manifest` waits for it rather than starting again."""
    threading.Thread(target=environment_manifest, name="environment-manifest", daemon=True).start()


def _log_environment_manifest(run: TrackedRun) -> None:
    """pip freeze and collect_env as artifacts of ``run``; nothing built when nothing is logged (``--no-mlflow``)."""
    if run.enabled:
        for name, text in environment_manifest().items():
            run.log_text(text, name)


def environment_manifest() -> dict[str, str]:
    """pip freeze (from installed metadata) and torch's collect_env report, as artifact texts (once a process:
    collect_env takes most of a second)."""
    with _MANIFEST_LOCK:
        return _build_manifest()


@functools.lru_cache(maxsize=1)
def _build_manifest() -> dict[str, str]:
    frozen = sorted(f"{dist.metadata['Name']}=={dist.version}" for dist in importlib.metadata.distributions())
    try:
        from torch.utils.collect_env import get_pretty_env_info

        collect_env = str(get_pretty_env_info())  # type: ignore[no-untyped-call]
    except Exception as error:  # noqa: BLE001 - the manifest is best effort; say why it is missing
        collect_env = f"torch collect_env failed: {type(error).__name__}: {error}"
    return {"environment/pip-freeze.txt": "\n".join(frozen) + "\n", "environment/collect_env.txt": collect_env}


def log_run_report(run: TrackedRun, report: RunReport, payload: dict[str, Any]) -> None:
    """Everything about a finished ``equiv run`` on its parent run, and its outcome (the verdict in its name,
    FAILED when a finding fails: :meth:`TrackedRun.conclude`)."""
    counted = [finding for finding in report.findings if finding.counts]
    failed = tuple(finding.id for finding in counted if not finding.holds)
    metrics: dict[str, float] = {
        "all_hold": float(report.all_hold),
        "load_seconds": report.load_seconds,
        FINDINGS_FAILED_METRIC: float(len(failed)),
    }
    for finding in report.findings:
        metrics |= {f"{finding.id}.{key}": value for key, value in finding.evidence.metrics().items()}
    run.log(
        metrics=metrics,
        tags={
            **environment_tags(report.environment.to_dict()),
            **determinism_tags(report.determinism.to_dict()),
            **architecture_tags(report.architecture),
            Tag.LAYERS_PATH: report.architecture.layers_path,
            **adapter_tags(report.adapter),
            "weights_sha256": report.weights_sha256,
            Tag.FINGERPRINT: report.fingerprint(),
        },
    )
    run.log_json(payload, "results.json")
    run.log_json(_generated_ids(report), "generated_ids.json")
    run.log_json(_logits_hashes(report), "logits_hashes.json")
    _log_environment_manifest(run)
    run.conclude(Outcome.counted(failed, len(counted)))


def adapter_tags(adapter: Adapter | None) -> dict[str, str]:
    """The base model and the adapter of a model loaded as a PEFT adapter; none for any other model."""
    if adapter is None:
        return {}
    return {Tag.BASE_MODEL: adapter.base_model, Tag.ADAPTER: adapter.path, "adapter_peft_type": adapter.peft_type}


def _generated_ids(report: RunReport) -> dict[str, Any]:
    """Raw and decoded generated ids of every arm of every finding."""
    return {
        f"{finding.id}.{arm}": {"ids": list(summary.generated_ids), "text": summary.text}
        for finding in report.findings
        for arm, summary in finding.evidence.generations().items()
    }


def _logits_hashes(report: RunReport) -> dict[str, str]:
    return {
        f"{finding.id}.{key}": value
        for finding in report.findings
        for key, value in _finding_hashes(finding).items()
        if key.endswith("logits_sha256")
    }


def log_bench_cells(tracker: Tracker, parent: TrackedRun, cells: list[ArmResult]) -> None:
    """A child run per (arm, new_tokens) cell, logged as each size block finishes."""
    for cell in cells:
        record = cell.to_dict()
        with tracker.run(
            f"arm: {cell.arm} x{cell.new_tokens}", parent=parent, tags={Tag.KIND: RunKind.BENCH_CELL}
        ) as child:
            metrics = {
                key: record[key]
                for key in (
                    "median_s",
                    "iqr_s",
                    "min_s",
                    "ci95_low_s",
                    "ci95_high_s",
                    "ci_half_width",
                    "cpu_median_s",
                    "peak_memory_bytes",
                    Metric.RATIO_TO_HOOK,
                    "ratio_to_unsteered",
                    "logits_max_abs_diff",
                )
            }
            for flag in ("ids_match_hook", "steering_applied", "precise"):
                if record[flag] is not None:
                    metrics[flag] = float(record[flag])
            child.log(
                params={Param.ARM: cell.arm, Param.NEW_TOKENS: cell.new_tokens, "rounds": cell.stats.n},
                metrics=metrics,
                tags={
                    Tag.STATUS: cell.status,
                    Tag.IDS_SHA256: ids_sha256(cell.generated_ids),
                    Tag.LOGITS_SHA256: cell.logits_sha256,
                    "timing_mode": record["timing_mode"],
                    "correctness_mode": record["correctness_mode"],
                },
            )
            child.log_json(record, "cell.json")
        safe = f"{cell.arm}.x{cell.new_tokens}"
        parent.log(
            metrics={
                f"median_s.{safe}": cell.stats.median_s,
                **({f"ratio_to_hook.{safe}": cell.ratio_to_hook} if cell.ratio_to_hook else {}),
            }
        )


def log_bench_report(run: TrackedRun, report: BenchReport, payload: dict[str, Any]) -> None:
    """Growth exponents, correctness summary, provenance and artifacts on the bench parent run, and its outcome:
    every cell correct and every finding run with it (``--with-findings``, its child runs) holding."""
    failed = (*report.incorrect_cells(), *run.children_failed)
    exponents: dict[str, float] = {}
    for arm, exponent in report.growth_exponents().items():
        if exponent.measurable and exponent.value is not None:  # a noise-level slope is not a result to plot
            exponents[f"growth_exponent.{arm}"] = exponent.value
    load = report.load
    run.log(
        metrics={
            "all_correct": float(report.all_correct),
            "precise_share": report.precise_share,
            "timing_seconds": report.timing_seconds,
            "others_cpu_share": load.others_share,
            "loadavg_start": load.loadavg_start[0],
            "loadavg_end": load.loadavg_end[0],
            **exponents,
        },
        tags={
            "machine_busy": str(load.busy).lower(),
            "memory_method": report.memory_method,
            **environment_tags(report.environment.to_dict()),
            **determinism_tags(report.determinism.timing.to_dict(), "timing"),
            **determinism_tags(report.determinism.correctness.to_dict(), "correctness"),
            **architecture_tags(report.architecture),
        },
    )
    run.log_json(payload, "bench.json")
    run.log_json(
        {
            f"{c.arm}.x{c.new_tokens}": {"ids": list(c.generated_ids), "logits_sha256": c.logits_sha256}
            for c in report.results
        },
        "generated_ids.json",
    )
    _log_environment_manifest(run)
    run.conclude(Outcome.counted(failed, len(report.results) + run.children_concluded, "checks"))
