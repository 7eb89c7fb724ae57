"""The conformance table (Markdown): one row per library version and variant, one column per intent, the state in
each cell (per model where the models disagree); then every cell that is not SUPPORTED, explained: its reason, the
first differing token and the grid of what the library touched. Standard library only."""

from __future__ import annotations

from equiv_core.conformance.record import CellRecord, CellState, EnvironmentStatus
from equiv_core.conformance.status import ConformanceStatus

_SHORT = {
    CellState.SUPPORTED: "SUPPORTED",
    CellState.SUPPORTED_DEGRADED: "SUPPORTED_DEGRADED",
    CellState.SILENTLY_WRONG: "**SILENTLY_WRONG**",
    CellState.ERROR: "**ERROR**",
    CellState.NOT_EXPRESSIBLE: "NOT_EXPRESSIBLE",
    CellState.NO_REFERENCE: "NO_REFERENCE",
}


def _states(cells: list[CellRecord], models: tuple[str, ...]) -> str:
    """One table cell: the state, or each model's where they differ ("—": no such way)."""
    by_model = {cell.model: _SHORT[cell.state] + ("+" if cell.left_behind_total else "") for cell in cells}
    if not by_model:
        return "—"
    states = set(by_model.values())
    if len(states) == 1 and len(by_model) == len(models):
        return states.pop()
    return "<br>".join(f"{model}: {by_model[model]}" for model in models if model in by_model)


def table_rows(status: ConformanceStatus) -> list[str]:
    """The table's Markdown lines (header included)."""
    header = ["library", "version", "variant", *status.intents]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for environment in status.environments:
        if environment.status is not EnvironmentStatus.RAN:
            reason = environment.reason.replace("|", "\\|")
            lines.append(
                f"| {environment.library} | {environment.version} | — | "
                + " | ".join([f"{environment.status}: {reason}"] + ["—"] * (len(status.intents) - 1))
                + " |"
            )
            continue
        cells = [c for c in status.cells if (c.library, c.version) == (environment.library, environment.version)]
        for variant in dict.fromkeys(cell.variant for cell in cells):
            row = [environment.library, environment.version, variant]
            for intent in status.intents:
                row.append(_states([c for c in cells if c.intent == intent and c.variant == variant], status.models))
            lines.append("| " + " | ".join(row) + " |")
    return lines


LEFT_BEHIND_SHOWN = 3  # items of a long left-behind list named; the rest counted
REASON_SHOWN = 600  # characters of a cell's reason shown (the status file keeps it whole)


def cell_details(cell: CellRecord, models: tuple[str, ...]) -> list[str]:
    """How to read one cell (on ``models``, which showed it the same way): its reason, first differing token, what
    it left on the model, its grid."""
    head = f"- **{cell.library} {cell.version}, {cell.intent} ({cell.variant}), {', '.join(models)}: {cell.state}**"
    reason = cell.reason if len(cell.reason) <= REASON_SHOWN else cell.reason[: REASON_SHOWN - 1] + "…"
    lines = [head, f"  {reason}"]
    if cell.note:
        lines.append(f"  Note: {cell.note}")
    if cell.state is CellState.SUPPORTED_DEGRADED and cell.logits_max_abs_diff is not None:
        lines.append(
            f"  Logits differ from the reference by {cell.logits_max_abs_diff:.3g} "
            f"(noise floor {cell.noise_floor or 0:.3g})"
            + (f"; the library runs attention as {cell.attn_implementation}" if cell.attn_implementation else "")
        )
    first = cell.first_difference
    if first is not None:
        lines.append(
            f"  First differing token: step {first.step}, library {first.library_text!r} ({first.library_id}) vs "
            f"reference {first.reference_text!r} ({first.reference_id})"
        )
    if cell.left_behind:
        shown = "; ".join(cell.left_behind[:LEFT_BEHIND_SHOWN])
        more = cell.left_behind_total - min(len(cell.left_behind), LEFT_BEHIND_SHOWN)
        lines.append(
            f"  Left on the model (later outputs unchanged): {shown}" + (f"; and {more} more" if more > 0 else "")
        )
    if cell.grid and cell.state in (CellState.SILENTLY_WRONG, CellState.SUPPORTED_DEGRADED):
        lines += ["", "  ```text", *(f"  {line}" for line in cell.grid), "  ```"]
    lines.append(f"  Written after: {cell.follows}")
    return lines


def _same_showing(cell: CellRecord) -> tuple[object, ...]:
    """What a reader sees of a cell but its model: cells equal in it are explained once, their models listed."""
    return (
        cell.library,
        cell.version,
        cell.intent,
        cell.variant,
        cell.state,
        cell.reason,
        cell.grid,
        cell.first_difference,
        len(cell.left_behind) > 0,
    )


def explained(status: ConformanceStatus) -> list[str]:
    """The cells that are not SUPPORTED or leave something behind, each way of showing explained once."""
    groups: dict[tuple[object, ...], list[CellRecord]] = {}
    for cell in status.cells:
        if cell.state is not CellState.SUPPORTED or cell.left_behind:
            groups.setdefault(_same_showing(cell), []).append(cell)
    lines: list[str] = []
    for cells in groups.values():
        lines += [*cell_details(cells[0], tuple(cell.model for cell in cells)), ""]
    return lines


def render_table(status: ConformanceStatus) -> str:
    """The whole Markdown document: when, which versions and models, the table, the cells explained."""
    counts = ", ".join(f"{count} {state}" for state, count in status.states().items() if count)
    lines = [
        "# Steering-library conformance",
        "",
        f"Generated {status.generated_at} by `equiv conformance-report` (`nox -s conformance`); "
        f"models {', '.join(status.models)}; "
        f"{len(status.cells)} cells: {counts}.",
        "",
        *table_rows(status),
        "",
        "States: SUPPORTED (touched as intended, ids equal the raw-hook reference, logits bit-identical or within the "
        "unsteered model's noise floor), SUPPORTED_DEGRADED (as intended, logits beyond the floor), SILENTLY_WRONG "
        "(no error, but touched other cells, other ids, changed nothing, left steering behind, or removed hooks it did "
        "not register), ERROR (raised: the step and where), NOT_EXPRESSIBLE (the library cannot say it: its reason), "
        "NO_REFERENCE (the harness could not judge it: the reason). A state followed by + leaves hooks or modules on "
        "the model that change no later output (listed below).",
        "",
        "## Environments (each library's own pins)",
        "",
        *environment_rows(status),
        "",
        "## Cells that are not SUPPORTED, or leave something on the model",
        "",
    ]
    return "\n".join(lines + (explained(status) or ["(none)"])).rstrip() + "\n"


ENVIRONMENT_PACKAGES = ("torch", "transformers", "nnsight", "numpy", "python")


def environment_rows(status: ConformanceStatus) -> list[str]:
    """Each environment's installed versions and how long its cells took."""
    header = ["environment", "status", *ENVIRONMENT_PACKAGES, "seconds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for e in status.environments:
        versions = [e.versions.get(package, "—") for package in ENVIRONMENT_PACKAGES]
        lines.append("| " + " | ".join([e.environment, str(e.status), *versions, f"{e.seconds:.0f}"]) + " |")
    return lines
