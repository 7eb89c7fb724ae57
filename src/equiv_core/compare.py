"""``equiv compare``: chosen MLflow runs side by side: verdicts, timing ratios, and which token ids and logits
hashes are bit-identical across them."""

from __future__ import annotations

from dataclasses import dataclass

from equiv_core.errors import UserInputError
from equiv_core.experiments import EXPERIMENTS
from equiv_core.tracking import Tracker

HEADER_TAGS = (
    "model",
    "command",
    "device",
    "dtype",
    "nnsight_version",
    "transformers_version",
    "torch_version",
    "block_output_form",
    "git_commit",
    "verdict",
)


@dataclass(frozen=True, slots=True)
class RunView:
    """One parent run and its children, as read back from MLflow."""

    run_id: str
    name: str
    status: str
    values: dict[str, str]  # header rows
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
    return RunView(run_id, run.info.run_name or run_id, run.info.status, header, verdicts, ratios, hashes)


def latest_parent_runs(tracker: Tracker, count: int = 2) -> list[str]:
    """The ids of the newest top-level runs of the tracker's experiment."""
    runs = tracker.client.search_runs(
        [tracker.experiment_id], "", order_by=["attributes.start_time DESC"], max_results=200
    )
    parents = [run.info.run_id for run in runs if not run.data.tags.get("mlflow.parentRunId")]
    if len(parents) < 2:
        raise UserInputError(
            f"experiment {tracker.experiment_name!r} has {len(parents)} top-level runs; "
            "need at least 2 to compare (or give run ids)"
        )
    return parents[:count]


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]


def compare_runs(tracker: Tracker, run_ids: list[str]) -> str:
    """The side-by-side report printed by ``equiv compare``."""
    views = [_load(tracker, run_id) for run_id in run_ids]
    header = ["", *[f"{view.run_id[:8]} {view.name}" for view in views]]
    rows: list[list[str]] = [header, ["status", *[view.status for view in views]]]
    rows += [[tag, *[view.values[tag] for view in views]] for tag in HEADER_TAGS]
    order = list(EXPERIMENTS.names())
    findings = sorted(
        {f for view in views for f in view.verdicts},
        key=lambda f: (f not in order, order.index(f) if f in order else 0, f),
    )
    lines = _table(rows)
    if findings:
        lines += ["", "findings"]
        lines += _table([["", *header[1:]]] + [[f, *[v.verdicts.get(f, "-") for v in views]] for f in findings])
    cells = sorted({cell for view in views for cell in view.ratios})
    if cells:
        lines += ["", "timing ratio to hook (median / hook median, same run)"]
        lines += _table(
            [["", *header[1:]]]
            + [[cell, *[f"{v.ratios[cell]:.3f}x" if cell in v.ratios else "-" for v in views]] for cell in cells]
        )
    keys = sorted({key for view in views for key in view.hashes})
    if keys:
        lines += ["", "bit-identical across runs (token ids and logits SHA-256)"]
        hash_rows = [["", "identical", *header[1:]]]
        for key in keys:
            seen = [view.hashes.get(key) for view in views]
            same = "yes" if None not in seen and len(set(seen)) == 1 else "NO"
            hash_rows.append([key, same, *[(value or "-")[:12] for value in seen]])
        lines += _table(hash_rows)
    return "\n".join(lines)
