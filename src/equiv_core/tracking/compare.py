"""``equiv compare``: chosen MLflow runs side by side: what each ran (model, prompt, layer, seed, edit),
verdicts, timing ratios, and which token ids and logits hashes are bit-identical across them (each hash once),
with what differs between the runs named next to any hash that differs.

Runs are compared only when their findings and generations correspond: the same command (run / bench), the same
mode (the study's five findings / a steering spec) and the same number of prompts; asked for others, ``equiv
compare`` refuses in one line (exit 2), and with no run ids it picks the newest run and the newest earlier one it
can be compared with. Runs that differ in anything else they ran (model, prompt, edit, seed, ...) are compared with
those differences listed first and named as the cause of the hashes that differ, before the environment."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

from equiv_core.findings.study.registered import EXPERIMENTS
from equiv_core.support.errors import UserInputError
from equiv_core.support.tables import text_table
from equiv_core.tracking.orphans import orphan_reason
from equiv_core.tracking.schema import ENVIRONMENT_TAGS, HASH_SUFFIX, HEADER_TAGS, Metric, Param, RunKind, Tag
from equiv_core.tracking.store import RunSummary, Tracker

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
UNRECORDED = "-"
# Setup fields two runs must share to be compared at all: otherwise their findings and generations do not
# correspond (a run against a bench, the five findings against a spec's, a batch against one prompt).
MUST_MATCH = ("command", "mode", "batch_size")
NOT_A_CAUSE = ("experiments",)  # which findings ran changes no generation, so no hash


@dataclass(frozen=True, slots=True)
class Setup:
    """What a run ran, read from its params; :data:`UNRECORDED` where the run did not record a field (runs logged
    by an older equiv, or by other tools), which then matches anything."""

    command: str
    mode: str  # "five findings" or "spec"
    batch_size: str
    model: str
    prompt: str
    prompts_sha256: str
    edit: str
    layer: str
    position: str
    seed: str
    max_new_tokens: str  # equiv run
    new_tokens: str  # equiv bench
    dtype: str
    device: str
    decoding: str
    padding: str
    add_special_tokens: str
    chat_template: str
    experiments: str

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> Setup:
        values = {item.name: params.get(item.name, UNRECORDED) for item in fields(cls)}
        if "command" in params:
            values["mode"] = "spec" if any(key.startswith("spec.") for key in params) else "five findings"
        values["prompts_sha256"] = values["prompts_sha256"][:12]  # as hashes are shown: short, and "-" stays "-"
        return cls(**values)


@dataclass(frozen=True, slots=True)
class Difference:
    """A setup field whose recorded values differ between the compared runs (one value per run)."""

    field: str
    values: tuple[str, ...]

    def render(self) -> str:
        return f"{self.field} {' vs '.join(self.values)}"


def setup_differences(setups: Sequence[Setup]) -> list[Difference]:
    """The setup fields every run recorded whose values differ, in :class:`Setup` order."""
    found = []
    for item in fields(Setup):
        values = tuple(str(getattr(setup, item.name)) for setup in setups)
        if UNRECORDED not in values and len(set(values)) > 1:
            found.append(Difference(item.name, values))
    return found


def blocking(differences: Sequence[Difference]) -> str:
    """The differences that keep runs from being compared (the :data:`MUST_MATCH` fields), "" when none do."""
    return "; ".join(difference.render() for difference in differences if difference.field in MUST_MATCH)


def refusal(run_ids: Sequence[str], differences: Sequence[Difference]) -> str:
    """Why these runs cannot be compared, in one line naming what to pass instead; "" when they can be."""
    why = blocking(differences)
    if not why:
        return ""
    return (
        f"runs {', '.join(run_id[:8] for run_id in run_ids)} cannot be compared: {why} (their "
        "findings and generations do not correspond); give run ids of the same command, mode and number of "
        "prompts (`equiv runs` lists them)"
    )


@dataclass(frozen=True, slots=True)
class RunView:
    """One parent run and its children, as read back from MLflow."""

    run_id: str
    name: str
    status: str
    setup: Setup
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
    if run.data.tags.get(Tag.PARENT):
        raise UserInputError(f"run {run_id} is a child run; give its parent {run.data.tags[Tag.PARENT]}")
    children = client.search_runs([run.info.experiment_id], f"tags.{Tag.PARENT} = '{run_id}'", max_results=1000)
    values = {**run.data.params, **run.data.tags}
    verdicts, ratios, hashes = {}, {}, {}
    for child in children:
        tags, params, metrics = child.data.tags, child.data.params, child.data.metrics
        if tags.get(Tag.KIND) == RunKind.FINDING:
            verdicts[params[Param.FINDING]] = tags.get(Tag.VERDICT, "?")
            for key, value in tags.items():
                if key.endswith(HASH_SUFFIX):
                    hashes[f"{params[Param.FINDING]} / {key}"] = value
        elif tags.get(Tag.KIND) == RunKind.BENCH_CELL:
            cell = f"{params[Param.ARM]} x{params[Param.NEW_TOKENS]}"
            if Metric.RATIO_TO_HOOK in metrics:
                ratios[cell] = metrics[Metric.RATIO_TO_HOOK]
            for key in (Tag.IDS_SHA256, Tag.LOGITS_SHA256):
                if key in tags:
                    hashes[f"{cell} / {key}"] = tags[key]
    header = {tag: str(values.get(tag, "-")) for tag in HEADER_TAGS}
    environment = {tag: values.get(tag, "unset") for tag in ENVIRONMENT_TAGS}
    status = run.info.status + (" (orphaned)" if orphan_reason(run.info.status, run.data.tags) else "")
    setup = Setup.from_params(run.data.params)
    return RunView(run_id, run.info.run_name or run_id, status, setup, header, environment, verdicts, ratios, hashes)


def _setup(tracker: Tracker, run_id: str) -> Setup:
    return Setup.from_params(tracker.client.get_run(run_id).data.params)


def latest_parent_runs(tracker: Tracker, count: int = 2) -> tuple[list[str], str]:
    """The newest top-level run of the tracker's experiment that reached its verdict (FINISHED, or FAILED by a
    failing finding) and the newest earlier ones it can be compared with (same :data:`MUST_MATCH` fields), and a
    note naming the newer runs passed over: those that did not finish (running, orphaned, crashed, killed) and
    those that ran something else; "" when none were."""
    runs = tracker.runs(top_level=True)
    done = [run for run in runs if run.reached_verdict]
    if len(done) < count:
        raise UserInputError(
            f"experiment {tracker.experiment_name!r} has {len(done)} finished top-level runs; "
            f"need at least {count} to compare (or give run ids)"
        )
    newest = _setup(tracker, done[0].run_id)
    chosen, unlike = [done[0]], []
    for run in done[1:]:
        if len(chosen) == count:
            break
        why = blocking(setup_differences([newest, _setup(tracker, run.run_id)]))
        if why:
            unlike.append((run, why))
        else:
            chosen.append(run)
    if len(chosen) < count:
        raise UserInputError(
            f"the newest finished run {done[0].run_id[:8]} ({done[0].name!r}) has no earlier finished run of the "
            "same command, mode and number of prompts to compare with; give run ids (`equiv runs` lists them)"
        )
    return [run.run_id for run in chosen], _passed_over(runs, chosen, unlike)


def _passed_over(runs: list[RunSummary], chosen: list[RunSummary], unlike: list[tuple[RunSummary, str]]) -> str:
    """The note on the runs newer than the oldest chosen one that were not chosen, and why."""
    oldest_start = chosen[-1].start_ms
    unfinished = "; ".join(
        f"{run.run_id[:8]} {run.status.lower()}" + (f" (orphaned: {run.orphaned})" if run.orphaned else "")
        for run in runs
        if not run.reached_verdict and run.start_ms > oldest_start
    )
    other = "; ".join(f"{run.run_id[:8]} ({why})" for run, why in unlike)
    notes = [
        *([f"passed over newer runs that did not finish: {unfinished}"] if unfinished else []),
        *([f"passed over newer runs that cannot be compared with {chosen[0].run_id[:8]}: {other}"] if other else []),
    ]
    return "; ".join(notes)


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


def _cause(environment: str, ran_differently: list[Difference]) -> str:
    """Why hashes differ: first what the runs ran differently (listed above the tables), then the environment
    fields that differ (``environment``, from :func:`_differences`)."""
    causes = [difference.field for difference in ran_differently if difference.field not in NOT_A_CAUSE]
    parts = [f"ran differently: {', '.join(causes)}"] if causes else []
    parts += [environment] if environment else []
    return "; ".join(parts) or "no recorded environment field differs"


def _hash_rows(views: list[RunView], header: list[str], cause: str) -> list[str]:
    """One row per arm and hash: an arm's generation shared by several findings (so logged under each, ``finding /
    arm.ids_sha256``) is one row naming the other findings; identical yes / NO / absent, and for NO what differs
    between the runs."""
    rows_by_hashes: dict[tuple[str, tuple[str | None, ...]], list[str]] = {}
    for key in sorted({key for view in views for key in view.hashes}, key=natural_key):
        arm = key.partition(" / ")[2]
        rows_by_hashes.setdefault((arm, tuple(view.hashes.get(key) for view in views)), []).append(key)
    rows = [["", "identical", *header, "also under", "differs with"]]
    for (_arm, seen), (key, *others) in rows_by_hashes.items():
        if None in seen:
            same, why = ABSENT, "not in every run"
        elif len(set(seen)) == 1:
            same, why = "yes", ""
        else:
            same, why = "NO", cause
        also = ", ".join(other.partition(" / ")[0] for other in others)
        rows.append([key, same, *[(value or ABSENT)[:12] for value in seen], also, why])
    return text_table(rows)


def compare_runs(tracker: Tracker, run_ids: list[str]) -> str:
    """The side-by-side report printed by ``equiv compare``; a one-line UserInputError for runs that cannot be
    compared (see the module docstring)."""
    views = [_load(tracker, run_id) for run_id in run_ids]
    ran_differently = setup_differences([view.setup for view in views])
    refused = refusal(run_ids, ran_differently)
    if refused:
        raise UserInputError(refused)
    header = [f"{view.run_id[:8]} {view.name}" for view in views]
    lines: list[str] = []
    if ran_differently:
        lines += ["these runs ran different things (hashes that differ below may follow from it):"]
        lines += text_table([["", *header]] + [[d.field, *d.values] for d in ran_differently])
        lines += [""]
    rows: list[list[str]] = [["", *header], ["status", *[view.status for view in views]]]
    rows += [[tag, *[view.values[tag] for view in views]] for tag in HEADER_TAGS]
    order = list(EXPERIMENTS.names())
    findings = sorted(
        {f for view in views for f in view.verdicts},
        key=lambda f: (f not in order, order.index(f) if f in order else 0, f),
    )
    lines += text_table(rows)
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
        lines += _hash_rows(views, header, _cause(differences, ran_differently))
    return "\n".join(lines)
