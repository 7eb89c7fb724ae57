"""``equiv compare``: chosen MLflow runs side by side: what each ran (model, prompt, layer, seed, edit),
verdicts, timing ratios, and which token ids and logits hashes are bit-identical across them, with the
environment fields that differ named next to any hash that differs."""

from __future__ import annotations

import re
from dataclasses import dataclass

from equiv_core.errors import UserInputError
from equiv_core.experiments import EXPERIMENTS
from equiv_core.orphans import orphan_reason
from equiv_core.provenance import ENVIRONMENT_TAGS
from equiv_core.tables import text_table
from equiv_core.tracking import Tracker

HEADER_TAGS = (
    "model",
    "command",
    "prompt",
    "layer",
    "seed",
    "edit",
    "device",
    "dtype",
    "nnsight_version",
    "transformers_version",
    "torch_version",
    "block_output_form",
    "git_commit",
    "verdict",
)
# Short names for the environment fields a difference is explained by.
_SHORT = {
    "torch_threads": "threads",
    "torch_interop_threads": "inter-op threads",
    "omp_num_threads": "OMP_NUM_THREADS",
    "mkl_num_threads": "MKL_NUM_THREADS",
    "cpu_capability": "CPU ISA",
    "cpu_model": "CPU",
}
ABSENT = "absent"


@dataclass(frozen=True, slots=True)
class RunView:
    """One parent run and its children, as read back from MLflow."""

    run_id: str
    name: str
    status: str
    values: dict[str, str]  # header rows
    environment: dict[str, str]  # ENVIRONMENT_TAGS -> value ("unset" when not recorded)
    verdicts: dict[str, str]  # finding id -> PASS / FAIL
    ratios: dict[str, float]  # "arm xN" -> ratio to hook
    hashes: dict[str, str]  # "finding or cell / key" -> sha256


def _load(tracker: Tracker, run_id: str) -> RunView:
    client = tracker.client
    try:
        run = client.get_run(run_id)
    except Exception:  # noqa: BLE001 - unknown id or foreign store
        raise UserInputError(f"no MLflow run {run_id!r} in {tracker.uri}") from None
    if run.data.tags.get("mlflow.parentRunId"):
        raise UserInputError(f"run {run_id} is a child run; give its parent {run.data.tags['mlflow.parentRunId']}")
    children = client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'", max_results=1000)
    values = {**run.data.params, **run.data.tags}
    verdicts, ratios, hashes = {}, {}, {}
    for child in children:
        tags, params, metrics = child.data.tags, child.data.params, child.data.metrics
        if tags.get("kind") == "finding":
            verdicts[params["finding"]] = tags.get("verdict", "?")
            for key, value in tags.items():
                if key.endswith("_sha256"):
                    hashes[f"{params['finding']} / {key}"] = value
        elif tags.get("kind") == "bench-cell":
            cell = f"{params['arm']} x{params['new_tokens']}"
            if "ratio_to_hook" in metrics:
                ratios[cell] = metrics["ratio_to_hook"]
            for key in ("ids_sha256", "logits_sha256"):
                if key in tags:
                    hashes[f"{cell} / {key}"] = tags[key]
    header = {tag: str(values.get(tag, "-")) for tag in HEADER_TAGS}
    environment = {tag: values.get(tag, "unset") for tag in ENVIRONMENT_TAGS}
    status = run.info.status + (" (orphaned)" if orphan_reason(run.info.status, run.data.tags) else "")
    return RunView(run_id, run.info.run_name or run_id, status, header, environment, verdicts, ratios, hashes)


def latest_parent_runs(tracker: Tracker, count: int = 2) -> tuple[list[str], str]:
    """The ids of the newest FINISHED top-level runs of the tracker's experiment, and a note naming the newer
    runs passed over (running, orphaned, failed or killed); "" when none were."""
    runs = tracker.runs(top_level=True)
    finished = [run.run_id for run in runs if run.status == "FINISHED"]
    if len(finished) < count:
        raise UserInputError(
            f"experiment {tracker.experiment_name!r} has {len(finished)} FINISHED top-level runs; "
            f"need at least {count} to compare (or give run ids)"
        )
    chosen = finished[:count]
    oldest_start = next(run.start_ms for run in runs if run.run_id == chosen[-1])
    skipped = [run for run in runs if run.status != "FINISHED" and run.start_ms > oldest_start]
    note = "; ".join(
        f"{run.run_id[:8]} {run.status.lower()}" + (f" (orphaned: {run.orphaned})" if run.orphaned else "")
        for run in skipped
    )
    return chosen, f"passed over newer runs that did not finish: {note}" if note else ""


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders digit runs as numbers: ``hook x8`` before ``hook x16``."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", text) if part)


def _differences(views: list[RunView]) -> str:
    """The environment fields whose values differ across ``views``, e.g. ``threads 1 vs 2``; "" when none."""
    parts = []
    for tag in ENVIRONMENT_TAGS:
        values = [view.environment[tag] for view in views]
        if len(set(values)) > 1:
            parts.append(f"{_SHORT.get(tag, tag)} {' vs '.join(values)}")
    return "; ".join(parts)


def _hash_rows(views: list[RunView], header: list[str]) -> list[str]:
    """One row per hash key: identical yes / NO / absent, and for NO the environment fields that differ."""
    differences = _differences(views) or "no recorded environment field differs"
    rows = [["", "identical", *header, "differs with"]]
    for key in sorted({key for view in views for key in view.hashes}, key=natural_key):
        seen = [view.hashes.get(key) for view in views]
        if None in seen:
            same, why = ABSENT, "not in every run"
        elif len(set(seen)) == 1:
            same, why = "yes", ""
        else:
            same, why = "NO", differences
        rows.append([key, same, *[(value or ABSENT)[:12] for value in seen], why])
    return text_table(rows)


def compare_runs(tracker: Tracker, run_ids: list[str]) -> str:
    """The side-by-side report printed by ``equiv compare``."""
    views = [_load(tracker, run_id) for run_id in run_ids]
    header = [f"{view.run_id[:8]} {view.name}" for view in views]
    rows: list[list[str]] = [["", *header], ["status", *[view.status for view in views]]]
    rows += [[tag, *[view.values[tag] for view in views]] for tag in HEADER_TAGS]
    order = list(EXPERIMENTS.names())
    findings = sorted(
        {f for view in views for f in view.verdicts},
        key=lambda f: (f not in order, order.index(f) if f in order else 0, f),
    )
    lines = text_table(rows)
    differences = _differences(views)
    lines += ["", f"environment differences: {differences or 'none recorded'}"]
    if findings:
        lines += ["", "findings"]
        lines += text_table([["", *header]] + [[f, *[v.verdicts.get(f, ABSENT) for v in views]] for f in findings])
    cells = sorted({cell for view in views for cell in view.ratios}, key=natural_key)
    if cells:
        lines += ["", "timing ratio to hook (median / hook median, same run)"]
        lines += text_table(
            [["", *header]]
            + [[cell, *[f"{v.ratios[cell]:.3f}x" if cell in v.ratios else ABSENT for v in views]] for cell in cells]
        )
    if any(view.hashes for view in views):
        lines += ["", "bit-identical across runs (token ids and logits SHA-256)"]
        lines += _hash_rows(views, header)
    return "\n".join(lines)
