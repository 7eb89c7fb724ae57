"""``equiv conformance-cell`` and ``equiv conformance-report``: one library environment's cells, checked in this
environment; the table and status file of all of them (``nox -s conformance`` runs both)."""

from __future__ import annotations

from pathlib import Path

from equiv_core.config.tracking import TrackingOptions
from equiv_core.conformance.intents import Intent
from equiv_core.conformance.matrix import ENVIRONMENTS, MODELS, LibraryEnvironment
from equiv_core.conformance.record import (
    STATUS_FILE,
    CellState,
    EnvironmentRecord,
    EnvironmentStatus,
    read_environments,
)
from equiv_core.jobs.common import open_tracker, settle
from equiv_core.support.errors import EnvironmentFault, ExitStatus, UserInputError, error_line
from equiv_core.support.outputs import write_text
from equiv_core.support.progress import say
from equiv_core.tracking.schema import RunKind, Tag

TABLE_FILE = "TABLE.md"
SNAPSHOT_TABLE = "CONFORMANCE.md"  # the committed copy of TABLE.md (bench/, beside the audit's)
README_START = "<!-- conformance-table: start (nox -s conformance writes this part) -->"
README_END = "<!-- conformance-table: end -->"


def conformance_cell_job(
    environment: LibraryEnvironment,
    models: tuple[str, ...],
    intents: tuple[Intent, ...],
    out: Path,
    tracking: TrackingOptions,
) -> int:
    """Run ``environment``'s cells here; a library that cannot be imported is recorded ``unsupported`` (exit 0:
    the table shows it), a state other than SUPPORTED is a result, not a failed command."""
    from equiv_core.conformance.adapter import load_adapter
    from equiv_core.conformance.cell import VersionMismatch, run_environment

    tracker = open_tracker(tracking)
    try:
        adapter = load_adapter(environment.module)
    except ImportError as error:  # the library (or what it imports) is not installed in this environment
        reason = f"import failed: {error_line(error)}"
        EnvironmentRecord.not_run(environment, EnvironmentStatus.UNSUPPORTED, reason).write(out)
        say(f"{environment.id}: unsupported: {reason}")
        return settle(tracker, None, ExitStatus.OK)
    try:
        record = run_environment(environment, adapter, models, out, tracker, say, intents)
    except VersionMismatch as error:
        raise EnvironmentFault(f'{error}: rebuild it (`nox -s "conformance_cell({environment.id})"`)') from None
    counts = {state: sum(cell.state is state for cell in record.cells) for state in CellState}
    summary = ", ".join(f"{count} {state}" for state, count in counts.items() if count)
    say(
        f"{environment.id} ({record.version}): {len(record.cells)} cells: {summary}; "
        f"{record.seconds:.1f} s from loading the first model"
    )
    return settle(tracker, None, ExitStatus.OK)


def conformance_report_job(results: Path, readme: Path | None, snapshot: Path | None, tracking: TrackingOptions) -> int:
    """Write ``TABLE.md`` and ``conformance-status.json`` in ``results`` from every environment record there (and
    the table into ``readme`` between its markers; both files into ``snapshot`` as ``CONFORMANCE.md`` and
    ``conformance-status.json``, the committed copies), logged to MLflow; print the table."""
    from equiv_core.conformance.status import build_status, write_status
    from equiv_core.conformance.table import render_table, table_rows

    if readme is not None:  # checked before anything is written: nothing half-done
        _readme_parts(readme)
    try:
        found = read_environments(results) if results.is_dir() else []
    except ValueError as error:
        raise UserInputError(f"{error}; re-run that environment, or remove the file") from None
    order = {environment.id: index for index, environment in enumerate(ENVIRONMENTS)}
    stale = sorted(record.environment for record in found if record.environment not in order)
    if stale:
        say(f"left out of the table: {', '.join(stale)} (no longer in the matrix, conformance/matrix.py)")
    records = sorted((r for r in found if r.environment in order), key=lambda record: order[record.environment])
    if not records:
        raise UserInputError(f"no conformance records in {str(results)!r}; run `.venv/bin/nox -s conformance` first")
    status = build_status(records, tuple(Intent))
    write_status(status, results / STATUS_FILE)
    table = write_text(results / TABLE_FILE, render_table(status))
    missing = _missing(records)
    if missing and (readme is not None or snapshot is not None):  # a partial run never replaces the full table
        say(f"not a full run ({missing}): the README's table and the snapshot in bench/ are left as they are")
        readme = snapshot = None
    if readme is not None:
        _update_readme(readme, table_rows(status), status.generated_at)
    if snapshot is not None:
        write_text(snapshot / SNAPSHOT_TABLE, table.read_text())
        write_status(status, snapshot / STATUS_FILE)
    tracker = open_tracker(tracking)
    with tracker.run("conformance report", tags={Tag.KIND: RunKind.CONFORMANCE_REPORT}) as run:
        ran = [e for e in status.environments if e.status is EnvironmentStatus.RAN]
        run.log(params={"environments": len(status.environments), "ran": len(ran)})
        run.log(metrics={f"cells.{state}": float(count) for state, count in status.states().items()})
        run.log_file(table)
        run.log_file(results / STATUS_FILE)
    print(table.read_text())
    also = [f"the table in {readme}"] if readme else []
    also += [f"the snapshot in {snapshot}"] if snapshot else []
    say(f"wrote {table} and {results / STATUS_FILE}" + "".join(f"; {item}" for item in also))
    return settle(tracker, run, ExitStatus.OK)


def _missing(records: list[EnvironmentRecord]) -> str:
    """What a full run of the matrix has that ``records`` lack ("" for a full run): environments, or models or
    intents of an environment that ran."""
    present = {record.environment: record for record in records}
    gaps = [f"no record of {e.id}" for e in ENVIRONMENTS if e.id not in present]
    for record in records:
        if record.status is EnvironmentStatus.RAN:
            models = [model for model in MODELS if model not in record.models]
            intents = {cell.intent for cell in record.cells}
            gaps += [f"{record.environment} without {', '.join(models)}"] if models else []
            gaps += [f"{record.environment} without {i}" for i in Intent if i not in intents]
    return "; ".join(gaps)


def _readme_parts(readme: Path) -> tuple[str, str]:
    """The README before its conformance start marker and after its end marker (UserInputError without them)."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise UserInputError(f"{readme} has no conformance markers ({README_START!r} ... {README_END!r})")
    before, rest = text.split(README_START, 1)
    return before, rest.split(README_END, 1)[1]


def _update_readme(readme: Path, rows: list[str], generated_at: str) -> None:
    """Replace what lies between the README's conformance markers with the table."""
    before, after = _readme_parts(readme)
    block = "\n".join(
        [README_START, f"Snapshot of {generated_at} (every cell explained: `bench/CONFORMANCE.md`):", "", *rows, ""]
    )
    write_text(readme, before + block + README_END + after)
