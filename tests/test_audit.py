"""Audit cells and the audit report: drift probes, cell results, Markdown and MLflow output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nnsight
import pytest
import torch
from mlflow_helpers import artifact_paths, parent_and_children
from nnsight import NNsight
from toy_models import TupleModel

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.nnsight import NnsightSteering
from equiv_core.arms.steering import Edit
from equiv_core.audit import cell as audit_cell
from equiv_core.audit.bisect import Bisection, Change, Probe
from equiv_core.audit.cell import literal_meaning, probe_pitfalls, run_cell
from equiv_core.audit.matrix import DEFAULT_CELLS
from equiv_core.audit.mlflow_source import download_cells
from equiv_core.audit.probes import CONTROL_PITFALLS, PITFALLS, LiteralEffect, literal_output0_edit
from equiv_core.audit.record import CellRecord, cell_slug
from equiv_core.audit.report import build_report, headlines, write_report
from equiv_core.audit.status import read_status
from equiv_core.cli.main import main
from equiv_core.findings.study.registered import EXPERIMENTS
from equiv_core.spec.recipes import RECIPES
from equiv_core.support.errors import error_line
from equiv_core.tracking.store import Tracker

ROOT = Path(__file__).resolve().parents[1]


def test_cell_slug_is_file_safe() -> None:
    assert cell_slug("nnsight='0.7.0'") == "nnsight-0.7.0"
    assert cell_slug("transformers='latest'") == "transformers-latest"


@pytest.mark.parametrize(
    ("effect", "meaning"),
    [
        (LiteralEffect(-1, ((0, 3),), None), "position 3 of batch 0 (the intended edit)"),
        (
            LiteralEffect(-1, ((0, 0), (0, 1), (0, 2), (0, 3)), None),
            "every position of batch row 0 (the whole sequence)",
        ),
        (LiteralEffect(3, None, "IndexError: index 3 is out of bounds"), "raises IndexError"),
    ],
)
def test_literal_meaning(effect: LiteralEffect, meaning: str) -> None:
    assert literal_meaning(effect, 4) == meaning


def _tuple_steering() -> NnsightSteering:
    """NnsightSteering over a toy model whose blocks return tuples, as GPT-2 did up to transformers 5.2."""
    model = TupleModel()
    return NnsightSteering(model, NNsight(model), "transformer.h", "tuple")


def test_literal_output0_on_tuple_blocks_hits_the_whole_batch_row() -> None:
    steering = _tuple_steering()
    input_ids = torch.tensor([[1, 2, 3, 4]])
    assert literal_output0_edit(steering, input_ids, 1, -1).zeroed == ((0, 0), (0, 1), (0, 2), (0, 3))
    out_of_range = literal_output0_edit(steering, input_ids, 1, 3)
    assert (
        out_of_range.zeroed is None and out_of_range.error is not None and out_of_range.error.startswith("IndexError")
    )


@pytest.fixture(scope="module")
def cell_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real cell result for tiny-gpt2 in this environment, logged to a real (throw-away) MLflow store."""
    directory = tmp_path_factory.mktemp("audit")
    store = f"sqlite:///{directory.parent / (directory.name + '-mlflow') / 'mlflow.db'}"
    run_cell("nnsight='0.8.1'", ("tiny-gpt2",), directory, Tracker(store, "equiv-audit").connect(), lambda _m: None)
    [(parent, _children)] = parent_and_children(store, "equiv-audit")
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["tiny-gpt2.block_output_form"] == "tensor"
    assert parent.data.metrics["tiny-gpt2.holds.iter0_equivalence"] == 1.0
    return directory


def test_cell_records_findings_drift_and_arms(cell_results: Path) -> None:
    record = CellRecord.read(cell_results / "nnsight-0.8.1.json")
    assert record.status == "ran" and record.versions["nnsight"]
    result = record.models["tiny-gpt2"]
    assert {f: v.verdict for f, v in result.findings.items()} == dict.fromkeys(EXPERIMENTS.names(), "PASS")
    assert result.block_output_form == "tensor"
    assert result.literal_output0_edit[0].meaning == "position 3 of batch 0 (the intended edit)"
    for arm in ("plain", "iter0", "recompute", "hook"):
        assert result.arms[arm].steering_applied is True
        assert result.arms[arm].ids_match_hook is True
    with __import__("numpy").load(cell_results / "nnsight-0.8.1.npz") as logits:
        assert logits["tiny-gpt2/plain"].shape == (5, 1024)


def test_a_cell_runs_every_steering_recipe_and_the_known_wrong_ones_fail_their_finding(cell_results: Path) -> None:
    recipes = CellRecord.read(cell_results / "nnsight-0.8.1.json").models["tiny-gpt2"].recipes
    assert set(recipes) == set(RECIPES.names())
    for name, findings in recipes.items():
        recipe = RECIPES.get(name)
        failed = {finding for finding, verdict in findings.items() if verdict.verdict != "PASS"}
        assert failed == ({recipe.flagged_by} if recipe.known_wrong else set()), name


def test_a_cell_record_reads_back_equal_to_what_was_written(cell_results: Path, tmp_path: Path) -> None:
    record = CellRecord.read(cell_results / "nnsight-0.8.1.json")
    assert CellRecord.read(record.write(tmp_path)) == record
    assert record.models["tiny-gpt2"].observables()["block_output_form"] == "tensor"


@pytest.mark.parametrize(
    ("option", "value", "said"),
    [("--cell", "bogus", "--cell 'bogus': valid: PACKAGE='VERSION'"), ("--source", "nope", "--source 'nope': valid")],
)
def test_audit_cell_refuses_a_cell_or_source_the_audit_does_not_spell(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, said: str
) -> None:
    """Before any model work: a made-up cell id used to run minutes of work and land in the report."""
    arguments = {"--cell": "nnsight='0.8.1'", "--source": "matrix", option: value}
    command = [
        "audit-cell",
        *(part for item in arguments.items() for part in item),
        "--out",
        str(tmp_path),
        "--no-mlflow",
    ]
    assert main(command) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and said in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_a_cell_file_of_the_first_untyped_format_is_refused_with_a_remedy(tmp_path: Path) -> None:
    (tmp_path / "old.json").write_text(json.dumps({"cell": "torch='9.9'", "status": "ran", "models": {}}))
    with pytest.raises(ValueError, match="cell file format None, expected 2: written by another version"):
        CellRecord.read(tmp_path / "old.json")


def _copy_cell(source: Path, directory: Path, cell: str, edit: Callable[[dict[str, object]], None]) -> None:
    payload = json.loads((source / "nnsight-0.8.1.json").read_text())
    payload["cell"] = cell
    edit(payload)
    (directory / f"{cell_slug(cell)}.json").write_text(json.dumps(payload))
    shutil.copy(source / "nnsight-0.8.1.npz", directory / f"{cell_slug(cell)}.npz")


def test_report_marks_unsupported_and_drifting_cells(cell_results: Path, tmp_path: Path) -> None:
    for name in ("nnsight-0.8.1.json", "nnsight-0.8.1.npz"):
        shutil.copy(cell_results / name, tmp_path / name)

    def drift(payload: dict[str, object]) -> None:
        model = payload["models"]["tiny-gpt2"]  # type: ignore[index]
        model["arms"]["plain"]["ids"] = [1, 2, 3, 4, 5]
        model["findings"]["iter0_equivalence"] = {"verdict": "FAIL", "message": "plain != iter0"}

    _copy_cell(cell_results, tmp_path, "nnsight='0.7.0'", drift)
    CellRecord("torch='9.9'", "unsupported", "install failed: no torch 9.9").write(tmp_path)
    markdown, rows = build_report(tmp_path)
    assert len(rows) == 3
    unsupported = next(row for row in rows if row["cell"] == "torch='9.9'")
    assert unsupported["position_sweep"] == "unsupported"
    drifted = next(row for row in rows if row["cell"] == "nnsight='0.7.0'")
    assert drifted["ids = ref"] == "**no**" and drifted["weights = ref"] == "yes"
    assert drifted["iter0_equivalence"] == "FAIL"
    assert "install failed: no torch 9.9" in markdown
    assert "plain != iter0" in markdown
    assert "same weights, different token ids" in markdown
    table = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len({line.count("|") for line in table}) == 1  # every row has as many cells as the header


def test_audit_report_cli_writes_markdown_and_logs_a_table(cell_results: Path, tmp_path: Path, store: str) -> None:
    results = tmp_path / "results"
    shutil.copytree(cell_results, results)
    CellRecord("torch='9.9'", "unsupported", "install failed", pins={"torch": "9.9"}).write(results)
    assert main(["audit-report", "--results", str(results)]) == 0
    assert (results / "REPORT.md").read_text().startswith("# equiv-bench audit report")
    uri = store
    runs = {parent.info.run_name: parent for parent, _ in parent_and_children(uri, "equiv-audit")}
    assert {"audit report", "audit torch='9.9'"} <= set(runs)
    assert runs["audit torch='9.9'"].data.tags["status"] == "unsupported"
    assert {"REPORT.md", "audit_table.json"} <= artifact_paths(uri, runs["audit report"].info.run_id)
    assert CellRecord.read(results / "torch-9.9.json").mlflow_run_id
    assert runs["audit torch='9.9'"].data.tags["torch_pin"] == "9.9"


def test_audit_report_without_results_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["audit-report", "--results", str(tmp_path / "none"), "--no-mlflow"]) == 2
    assert "run `.venv/bin/nox -s audit` first" in capsys.readouterr().err


@pytest.mark.integration
def test_nox_lists_the_audit_matrix_and_the_release_searches() -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "nox", "-l"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    for cell in DEFAULT_CELLS:
        assert f"audit_cell({cell})" in listed
    for session in ("audit ", "audit_bisect(package='nnsight')", "audit_sweep(package='transformers')"):
        assert session in listed


@pytest.mark.parametrize(
    ("behaviour", "expected"),
    [("raise", "raises"), ("unsteered", "UNSTEERED without error"), ("steered", "steered")],
)
def test_pitfall_probe_classifies_what_a_version_does(
    context_for: Callable[[str], SteeringContext], monkeypatch: pytest.MonkeyPatch, behaviour: str, expected: str
) -> None:
    """A version that raises is safe; one that returns unsteered ids without an error is flagged."""
    context = context_for("tiny-gpt2")
    input_ids = context.encode("The weather today is")
    edit = Edit(0, int(input_ids.shape[1]) - 1)

    def fake(
        _steering: NnsightSteering, pitfall: str, ids: torch.Tensor, max_new_tokens: int, _edit: Edit
    ) -> list[int]:
        if behaviour == "raise":
            raise RuntimeError("OutOfOrderError: value was missed")
        record = (
            context.unsteered(ids, max_new_tokens)
            if behaviour == "unsteered"
            else context.reference(ids, max_new_tokens, edit)
        )
        return list(record.generated_ids)

    hook = context.reference(input_ids, 5, edit).generated_ids
    unsteered = context.unsteered(input_ids, 5).generated_ids
    monkeypatch.setattr(audit_cell, "pitfall_generate", fake)
    outcomes = probe_pitfalls(context, 5, hook, unsteered)
    assert set(outcomes) == set(PITFALLS) | set(CONTROL_PITFALLS)
    assert {outcomes[pitfall].outcome for pitfall in PITFALLS} == {expected}


# What each audited nnsight release does with each known-bad pattern (bench/AUDIT.md, audit of 2026-11-27).
PITFALL_OUTCOMES_BY_NNSIGHT = {
    "0.5.15": {"result_before_iter_loop": "not expressible", "result_before_with_iter": "raises"},
    "0.6.3": {"result_before_iter_loop": "raises", "result_before_with_iter": "raises"},
    "0.7.0": {"result_before_iter_loop": "raises", "result_before_with_iter": "raises"},
    "0.8.1": {
        "result_before_iter_loop": "raises",
        "result_before_with_iter": "UNSTEERED without error",
        "code_after_unbounded_iter": "silently skipped",  # shared NOTES: "code after the loop never runs"
        "step_window": "correct",
    },
}


@pytest.mark.parametrize("pitfall", [*PITFALLS, *CONTROL_PITFALLS])
def test_pitfall_probe_on_the_installed_nnsight(context_for: Callable[[str], SteeringContext], pitfall: str) -> None:
    """The installed nnsight does exactly what the audit recorded for its release (0.8.1, the pinned one, raises
    for the for-loop form, silently returns unsteered ids for the deprecated with-block form, never runs code
    after an unbounded step loop, and fires a step window where asked)."""
    expected = PITFALL_OUTCOMES_BY_NNSIGHT.get(nnsight.__version__, {})
    if pitfall not in expected:
        pytest.skip(f"no audited expectation of {pitfall} for nnsight {nnsight.__version__}: audit it, add it above")
    context = context_for("tiny-gpt2")
    input_ids = context.encode("The weather today is")
    hook = context.reference(input_ids, 3, Edit(0, int(input_ids.shape[1]) - 1)).generated_ids
    outcomes = probe_pitfalls(context, 3, hook, context.unsteered(input_ids, 3).generated_ids)
    assert outcomes[pitfall].outcome == expected[pitfall]


def _search(tmp_path: Path) -> Bisection:
    """A recorded release search as the nox session leaves it: the search record and its cells' records."""
    cells = tmp_path / "releases" / "bisect-transformers"
    for version, form in (("5.2.0", "tuple"), ("5.3.0", "tensor")):
        CellRecord(f"transformers='{version}'", "unsupported", f"{form}: not run here").write(cells)
    probes = (
        Probe("5.2.0", "ran", None, {"tiny-gpt2/block_output_form": "tuple"}, 30.0),
        Probe("5.2.5", "unsupported", "install failed: no wheel", {}, 5.0),
        Probe("5.3.0", "ran", None, {"tiny-gpt2/block_output_form": "tensor"}, 30.0),
    )
    change = Change("tiny-gpt2/block_output_form", "tuple", "tensor", "5.2.0", "5.3.0", ("5.2.5",))
    search = Bisection("transformers", "bisect", ("5.2.0", "5.2.5", "5.3.0"), probes, (change,), 65.0)
    search.write(tmp_path / "releases" / "bisect-transformers.json")
    return search


def test_status_json_has_one_record_per_cell_model_and_the_searches_and_reads_back(
    cell_results: Path, tmp_path: Path
) -> None:
    for name in ("nnsight-0.8.1.json", "nnsight-0.8.1.npz"):
        shutil.copy(cell_results / name, tmp_path / name)

    def drift(payload: dict[str, object]) -> None:
        payload["models"]["tiny-gpt2"]["arms"]["plain"]["ids"] = [1, 2, 3, 4, 5]  # type: ignore[index]

    _copy_cell(cell_results, tmp_path, "nnsight='0.7.0'", drift)
    CellRecord("torch='9.9'", "unsupported", "install failed: no torch 9.9").write(tmp_path)
    search = _search(tmp_path)
    write_report(tmp_path)
    status = read_status(tmp_path / "status.json")
    [ran] = [r for r in status.records if r.cell == "nnsight='0.8.1'"]
    assert (ran.cell, ran.model, ran.ids_equal_reference, ran.weights_equal_reference) == (
        "nnsight='0.8.1'",
        "tiny-gpt2",
        True,
        True,
    )
    assert ran.observables["pitfall.result_before_with_iter"] == "UNSTEERED without error"
    assert ran.nnsight == nnsight.__version__
    [drifted] = [r for r in status.records if r.cell == "nnsight='0.7.0'"]
    assert (drifted.ids_equal_reference, drifted.weights_equal_reference) == (False, True)
    [unsupported] = [r for r in status.records if r.cell == "torch='9.9'"]
    assert (unsupported.model, unsupported.reason) == (None, "install failed: no torch 9.9")
    assert status.searches == (search,)
    assert {r.source for r in status.records} == {"matrix", "bisect-transformers"}
    assert json.loads((tmp_path / "status.json").read_text())["schema"] == "equiv-bench/audit-status"


def test_a_status_file_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    (tmp_path / "status.json").write_text(json.dumps({"schema": "equiv-bench/audit-status", "schema_version": 9}))
    with pytest.raises(ValueError, match="expected 'equiv-bench/audit-status' version 1"):
        read_status(tmp_path / "status.json")


def test_the_report_states_the_first_release_of_each_change_a_search_found(cell_results: Path, tmp_path: Path) -> None:
    shutil.copy(cell_results / "nnsight-0.8.1.json", tmp_path / "nnsight-0.8.1.json")
    _search(tmp_path)
    markdown, _rows = build_report(tmp_path)
    assert (
        "A decoder block of tiny-gpt2 returns a tuple up to transformers 5.2.0 and **a tensor from transformers "
        "5.3.0** (between them, 5.2.5 could not run)" in markdown
    )
    assert "3 environments built in 1.1 min (5.2.0, 5.2.5, 5.3.0)" in markdown
    assert "- transformers 5.2.5: **unsupported**: install failed: no wheel" in markdown


@pytest.mark.parametrize(
    ("message", "line"),
    [
        ("index 5 is out of bounds", "IndexError: index 5 is out of bounds"),
        (
            '\n\nTraceback (most recent call last):\n  File "x.py", line 1\n    shapes.append(1)\n\n'
            "AttributeError: module 'nnsight' has no attribute 'append'",
            "IndexError: AttributeError: module 'nnsight' has no attribute 'append'",
        ),
    ],
)
def test_an_error_is_one_line_even_when_a_library_puts_a_traceback_in_its_message(message: str, line: str) -> None:
    """nnsight 0.5.1's NNsightException carries the whole traceback in its message (seen in the release search)."""
    assert error_line(IndexError(message)) == line


SNAPSHOT = ROOT / "bench" / "audit-status.json"


def test_the_recorded_release_search_names_the_first_releases_the_audit_exists_to_pin_down() -> None:
    """On the committed audit (bench/audit-status.json, from `nox -s audit_bisect audit`): `tracer.result` read before a
    `with tracer.iter[0]:` block returns unsteered ids on nnsight 0.5.8 to 0.5.10, raises on 0.5.11 to 0.7.0, and
    returns unsteered ids again from 0.8.0; transformers 5.3.0 is the first where GPT-2's decoder block returns a
    tensor (shared NOTES)."""
    status = read_status(SNAPSHOT)
    changes = [
        (search.package, change) for search in status.searches if search.mode == "bisect" for change in search.changes
    ]
    with_iter = [
        (change.before, change.after, change.last_before, change.first_after)
        for package, change in changes
        if package == "nnsight" and change.observable == "tiny-gpt2/pitfall.result_before_with_iter"
    ]
    assert with_iter == [
        ("not expressible", "UNSTEERED without error", "0.5.7", "0.5.8"),
        ("UNSTEERED without error", "raises", "0.5.10", "0.5.11"),
        ("raises", "UNSTEERED without error", "0.7.0", "0.8.0"),
    ]
    block = next(
        change
        for package, change in changes
        if package == "transformers" and change.observable == "tiny-gpt2/block_output_form"
    )
    assert (block.before, block.after, block.last_before, block.first_after) == ("tuple", "tensor", "5.2.0", "5.3.0")
    lines = headlines(list(status.searches))
    assert any("**returns unsteered ids without an error from nnsight 0.8.0**" in line for line in lines)
    assert any(
        "**returns unsteered ids without an error from nnsight 0.5.8 up to nnsight 0.5.10**" in line for line in lines
    )
    assert any("**a tensor from transformers 5.3.0**" in line for line in lines)
    assert any("**never runs, without an error, from nnsight 0.8.0**" in line for line in lines)


def test_the_recorded_status_table_has_every_default_cell_and_the_searches_built_fewer_environments_than_releases() -> (
    None
):
    status = read_status(SNAPSHOT)
    assert {record.cell for record in status.records if record.source == "matrix"} == set(DEFAULT_CELLS)
    for search in status.searches:
        if search.mode == "bisect":
            assert len(search.probes) < len(search.versions)


def test_cells_read_from_a_store_are_the_newest_matrix_run_of_each_cell(cell_results: Path, tmp_path: Path) -> None:
    """A release-search probe with the same cell id is not the matrix cell; a cell whose newest run crashed is an
    error cell, not its older success; its logits come along."""
    import time

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "equiv-audit").connect()
    record = CellRecord.read(cell_results / "nnsight-0.8.1.json")

    def cell_run(cell: str, source: str, payload: CellRecord | None) -> None:
        with tracker.run(f"audit {cell}", tags={"kind": "audit-cell", "cell": cell, "audit_source": source}) as run:
            if payload is not None:
                run.log_json(payload.to_dict(), "audit_cell.json")
                run.log_file(cell_results / "nnsight-0.8.1.npz")
        time.sleep(0.01)  # start times in milliseconds: keep the order unambiguous

    cell_run("nnsight='0.8.1'", "matrix", record)
    cell_run("nnsight='0.8.1'", "bisect-nnsight", CellRecord("nnsight='0.8.1'", "unsupported", "a probe"))
    cell_run("torch='2.14.1'", "matrix", record)
    crashed = tracker.client.create_run(tracker.experiment_id, tags={"kind": "audit-cell", "cell": "torch='2.14.1'"})
    tracker.client.set_terminated(crashed.info.run_id, "FAILED")
    out = tmp_path / "out"
    cells = {cell.cell: cell for cell in download_cells(tracker, out)}
    assert set(cells) == {"nnsight='0.8.1'", "torch='2.14.1'"}
    assert cells["nnsight='0.8.1'"].status == "ran" and (out / "nnsight-0.8.1.npz").is_file()
    assert cells["torch='2.14.1'"].status == "error"
    assert f"its newest run on the server ended FAILED (run {crashed.info.run_id})" == cells["torch='2.14.1'"].reason
    assert not (out / "torch-2.14.1.npz").exists()
