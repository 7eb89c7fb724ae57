"""``equiv audit-report``: every audit cell side by side, in Markdown and as an MLflow table.

Rows are cells x models; columns are the five findings (PASS / FAIL / NOT EXPRESSIBLE / unsupported), the
block output form, what the original study's literal ``output[0][-1] = 0.0`` edits there, and whether token
ids and logits equal the reference cell's. Every non-PASS cell is explained below the table.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from equiv_core.audit.bisect import Bisection, Change, read_searches
from equiv_core.audit.matrix import NNSIGHT_BASE_CELL, REFERENCE_CELL, nnsight_cells, version_key
from equiv_core.audit.record import CellRecord, CellStatus, Pitfall, cell_slug, read_cells
from equiv_core.audit.status import build_status, write_status
from equiv_core.config.catalog import STUDY_FINDINGS
from equiv_core.findings.verdict import Verdict
from equiv_core.support.outputs import write_text

SHORT = {
    "position_sweep": "sweep",
    "kv_cache_persistence": "kv",
    "iter0_equivalence": "iter0",
    "iter_all_out_of_bounds": "iter_all",
    "steered_differs": "differs",
}


@dataclass(frozen=True, slots=True)
class CellComparison:
    """One model of one cell against the same model in another cell."""

    weights_identical: bool | None
    ids_identical: bool | None
    logits_max_abs_diff: float | None


def _logits(directory: Path, cell: str) -> dict[str, np.ndarray]:
    path = directory / f"{cell_slug(cell)}.npz"
    if not path.is_file():
        return {}
    with np.load(path) as archive:
        return {key: archive[key] for key in archive.files}


def compare_cells(directory: Path, cell: CellRecord, other: CellRecord, model: str) -> CellComparison:
    """Are the weights, every arm's ids, and every arm's logits the same in both cells for ``model``?"""
    mine, theirs = cell.models.get(model), other.models.get(model)
    if mine is None or theirs is None:
        return CellComparison(None, None, None)
    arms = sorted(set(mine.arms) & set(theirs.arms))
    ids_identical = mine.same_ids(theirs)
    mine_logits, their_logits = _logits(directory, cell.cell), _logits(directory, other.cell)
    diffs = [
        float(np.abs(mine_logits[key] - their_logits[key]).max())
        for arm in arms
        if (key := f"{model}/{arm}") in mine_logits
        and key in their_logits
        and mine_logits[key].shape == their_logits[key].shape
    ]
    return CellComparison(mine.weights_sha256 == theirs.weights_sha256, ids_identical, max(diffs) if diffs else None)


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "**no**")


def _diff(value: float | None) -> str:
    return "-" if value is None else ("0" if value == 0 else f"{value:.2g}")


def build_report(directory: Path, reference: str = REFERENCE_CELL) -> tuple[str, list[dict[str, Any]]]:
    """The Markdown report and its table rows (for MLflow) from the cell results in ``directory``."""
    cells = read_cells(directory)
    by_id = {cell.cell: cell for cell in cells}
    reference_cell = by_id.get(reference)
    findings = list(STUDY_FINDINGS)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for cell in cells:
        versions = cell.versions
        base = {
            "cell": cell.cell,
            "nnsight": versions.get("nnsight", "-"),
            "transformers": versions.get("transformers", "-"),
            "torch": versions.get("torch", "-"),
        }
        if cell.status != CellStatus.RAN:
            rows.append(
                {
                    **base,
                    "model": "-",
                    **dict.fromkeys(findings, cell.status),
                    "block_output": "-",
                    "literal_output0[-1]": "-",
                    "weights = ref": "-",
                    "ids = ref": "-",
                    "max abs dlogit vs ref": "-",
                }
            )
            notes.append(f"- `{cell.cell}`: **{cell.status}**: {cell.reason}")
            continue
        for model, result in cell.models.items():
            comparison = (
                compare_cells(directory, cell, reference_cell, model)
                if reference_cell is not None
                else CellComparison(None, None, None)
            )
            verdicts = {f: result.findings[f].verdict if f in result.findings else "-" for f in findings}
            rows.append(
                {
                    **base,
                    "model": model,
                    **verdicts,
                    "block_output": result.block_output_form,
                    "literal_output0[-1]": result.literal_output0_edit[0].meaning,
                    "weights = ref": _yes_no(comparison.weights_identical),
                    "ids = ref": _yes_no(comparison.ids_identical),
                    "max abs dlogit vs ref": _diff(comparison.logits_max_abs_diff),
                }
            )
            for finding, verdict in result.findings.items():
                if verdict.verdict != Verdict.PASS:
                    notes.append(f"- `{cell.cell}` / {model} / {finding}: **{verdict.verdict}**: {verdict.message}")
            for outcome in result.pitfalls.values():
                if outcome.outcome.silent:
                    notes.append(
                        f"- `{cell.cell}` / {model}: {outcome.pattern}: **{outcome.outcome}** ({outcome.detail}): "
                        "code written that way silently does something else than written on this version"
                    )
            if comparison.ids_identical is False:
                cause = (
                    "its weights differ from the reference cell's (random init changed between versions), "
                    "so ids cannot be compared"
                    if comparison.weights_identical is False
                    else "same weights, different token ids: generation or steering behaves differently"
                )
                notes.append(f"- `{cell.cell}` / {model}: ids differ from `{reference}`: {cause}")
    return _markdown(rows, notes, cells, reference, directory), rows


def _markdown(
    rows: list[dict[str, Any]], notes: list[str], cells: list[CellRecord], reference: str, directory: Path
) -> str:
    columns = [
        "cell",
        "nnsight",
        "transformers",
        "torch",
        "model",
        *STUDY_FINDINGS,
        "block_output",
        "literal_output0[-1]",
        "weights = ref",
        "ids = ref",
        "max abs dlogit vs ref",
    ]
    header = [SHORT.get(column, column) for column in columns]
    lines = [
        "# equiv-bench audit report",
        "",
        f"Generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M UTC} from {len(cells)} cells in `{directory}`. "
        f"Reference cell: `{reference}`. Findings: {', '.join(f'{SHORT.get(f, f)} = {f}' for f in STUDY_FINDINGS)}. "
        "`literal_output0[-1]` is what the original study's `block.output[0][-1] = 0.0` edits at the last layer.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(str(row[column]) for column in columns) + " |" for row in rows]
    lines += ["", "## What `.output[0]` means in each cell", ""]
    for cell in cells:
        for model, result in cell.models.items():
            effects = "; ".join(f"`output[0][{e.index}] = 0` -> {e.meaning}" for e in result.literal_output0_edit)
            lines.append(f"- `{cell.cell}` / {model}: block returns a **{result.block_output_form}**; {effects}")
    lines += ["", "## Known-bad patterns: rejected, or silently unsteered?", ""] + _pitfall_section(cells)
    lines += ["", "## nnsight versions against 0.6.3", ""] + _nnsight_section(cells, directory)
    lines += ["", "## First release where each observable changed", ""] + _releases_section(directory)
    lines += ["", "## Cells that are not PASS, or not identical to the reference, and why", ""]
    lines += notes or ["Every cell passed every finding with the reference cell's token ids."]
    return "\n".join(lines) + "\n"


def _pitfall_section(cells: list[CellRecord]) -> list[str]:
    """What each cell does with code that reads ``tracer.result`` before the step selector."""
    lines = ["Raising is the safe behaviour; `UNSTEERED without error` means such code silently does nothing.", ""]
    for cell in cells:
        for model, result in cell.models.items():
            for outcome in result.pitfalls.values():
                flag = "**" if outcome.outcome.silent else ""
                lines.append(
                    f"- `{cell.cell}` / {model} / {outcome.pattern}: {flag}{outcome.outcome}{flag} ({outcome.detail})"
                )
    return lines


def _nnsight_section(cells: list[CellRecord], directory: Path) -> list[str]:
    """Do nnsight 0.7.0 and 0.8.1 give what 0.6.3 gives (same weights, so any difference is nnsight's)?"""
    by_id = {cell.cell: cell for cell in cells}
    base = by_id.get(NNSIGHT_BASE_CELL)
    if base is None or base.status != CellStatus.RAN:
        return [f"No `{NNSIGHT_BASE_CELL}` cell ran; nothing to compare."]
    lines = []
    for cell_id in (cell for cell in nnsight_cells() if cell != NNSIGHT_BASE_CELL):
        cell = by_id.get(cell_id)
        if cell is None or cell.status != CellStatus.RAN:
            lines.append(f"- `{cell_id}`: {'not run' if cell is None else f'{cell.status}: {cell.reason}'}")
            continue
        for model in cell.models:
            comparison = compare_cells(directory, cell, base, model)
            verdicts_same = model in base.models and all(
                cell.models[model].findings[f].verdict == base.models[model].findings[f].verdict for f in STUDY_FINDINGS
            )
            lines.append(
                f"- `{cell_id}` vs 0.6.3 / {model}: verdicts {'same' if verdicts_same else '**differ**'}; "
                f"token ids of every arm identical: {_yes_no(comparison.ids_identical)}; "
                f"max abs logit diff {_diff(comparison.logits_max_abs_diff)}"
            )
    return lines


def headlines(searches: list[Bisection]) -> list[str]:
    """The release facts the audit exists to pin down, where a search found them: the nnsight releases where the
    deprecated with-block ``iter[0]`` after ``tracer.result`` starts or stops returning unsteered ids, the first
    where code after an unbounded ``iter[:]`` loop silently stops running, and the first transformers release where
    GPT-2's decoder block returns a tensor instead of a tuple. One line per fact, naming every search (bisect,
    sweep) that found it."""
    found: dict[str, list[str]] = {}
    for search in searches:
        for change in search.changes:
            model = change.observable.split("/")[0]
            if (
                change.observable.endswith("/pitfall.result_before_with_iter")
                and change.after == Pitfall.UNSTEERED
                and change.before != Pitfall.NOT_EXPRESSIBLE  # where the pattern first exists: the range line says it
            ):
                line = (
                    f"- `tracer.result` read before a `with tracer.iter[0]:` block ({model}): {change.before} up to "
                    f"nnsight {change.last_before}, **returns unsteered ids without an error from nnsight "
                    f"{change.first_after}**{_gap(change)}"
                )
            elif change.observable.endswith("/pitfall.result_before_with_iter") and change.before == Pitfall.UNSTEERED:
                began = next(
                    (
                        earlier.first_after
                        for earlier in search.changes
                        if earlier.observable == change.observable
                        and earlier.after == Pitfall.UNSTEERED
                        and version_key(earlier.first_after) <= version_key(change.last_before)
                    ),
                    None,
                )
                since = f"from nnsight {began} " if began else ""
                line = (
                    f"- `tracer.result` read before a `with tracer.iter[0]:` block ({model}): **returns unsteered ids "
                    f"without an error {since}up to nnsight {change.last_before}**, {change.after} from nnsight "
                    f"{change.first_after}{_gap(change)}"
                )
            elif change.observable.endswith("/block_output_form") and (change.before, change.after) == (
                "tuple",
                "tensor",
            ):
                line = (
                    f"- A decoder block of {model} returns a tuple up to transformers {change.last_before} and **a "
                    f"tensor from transformers {change.first_after}**{_gap(change)}: `block.output[0]` changed "
                    "meaning from the hidden states to their first batch row"
                )
            elif (
                change.observable.endswith("/pitfall.code_after_unbounded_iter")
                and change.after == Pitfall.SILENTLY_SKIPPED
            ):
                line = (
                    f"- Code after an unbounded `for step in tracer.iter[:]:` loop ({model}): {change.before} up to "
                    f"nnsight {change.last_before}, **never runs, without an error, from nnsight "
                    f"{change.first_after}**{_gap(change)}"
                )
            else:
                continue
            found.setdefault(line, []).append(f"{search.mode} of {search.package}")
    return [f"{line} (found by the {' and the '.join(sources)})." for line, sources in found.items()]


def _gap(change: Change) -> str:
    return f" (between them, {', '.join(change.skipped)} could not run)" if change.skipped else ""


def _releases_section(directory: Path) -> list[str]:
    searches = read_searches(directory)
    if not searches:
        return ["No release search has run (`.venv/bin/nox -s audit_bisect`, or `audit_sweep` for every release)."]
    lines = headlines(searches) + [""]
    for search in searches:
        lines.append(
            f"### {search.mode} over {len(search.versions)} {search.package} releases "
            f"({search.versions[0]} to {search.versions[-1]})"
        )
        lines.append("")
        lines.append(
            f"{search.environments} environments built in {search.seconds / 60:.1f} min "
            f"({', '.join(probe.version for probe in search.probes if probe.built)})"
            + (
                f"; {len(search.probes) - search.environments} releases refused without one."
                if search.environments < len(search.probes)
                else "."
            )
        )
        by_reason: dict[tuple[str, str | None], list[str]] = {}
        for probe in search.unsupported:
            by_reason.setdefault((probe.status, probe.reason), []).append(probe.version)
        for (status, reason), versions in by_reason.items():
            lines.append(f"- {search.package} {', '.join(versions)}: **{status}**: {reason}")
        lines += _grouped_changes(search) or ["- no change found"]
        lines.append("")
    return lines


def _grouped_changes(search: Bisection) -> list[str]:
    """One line per pair of neighbouring releases, the observables that changed there grouped by before -> after."""
    by_boundary: dict[tuple[str, str, tuple[str, ...]], dict[tuple[str, str], list[str]]] = {}
    for change in search.changes:
        boundary = by_boundary.setdefault((change.last_before, change.first_after, change.skipped), {})
        boundary.setdefault((change.before, change.after), []).append(change.observable)
    lines = []
    for (before, after, skipped), groups in by_boundary.items():
        gap = f" ({', '.join(skipped)} could not run)" if skipped else ""
        parts = [f"`{old}` -> `{new}`: {', '.join(names)}" for (old, new), names in groups.items()]
        lines.append(f"- **{search.package} {before} -> {after}**{gap}: " + "; ".join(parts))
    return lines


def write_report(directory: Path, reference: str = REFERENCE_CELL) -> tuple[Path, list[dict[str, Any]]]:
    """Write ``REPORT.md`` and ``status.json`` (:mod:`equiv_core.audit.status`) next to the cell results; return
    the report's path and its table rows."""
    markdown, rows = build_report(directory, reference)
    path = write_text(directory / "REPORT.md", markdown)
    write_status(build_status(directory, reference), directory / "status.json")
    return path, rows
