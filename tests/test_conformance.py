"""The conformance harness itself, with steering functions of known behaviour standing in for a library (the real
adapters' tests are in tests/conformance/, each run in its library's environment): how cells are judged, recorded,
tabled and read back, and the two commands' refusals."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from equiv_core.cli.main import main
from equiv_core.conformance.adapter import Adapter, Form, Variant, Way
from equiv_core.conformance.cell import CellPlace, run_way
from equiv_core.conformance.intents import Intent
from equiv_core.conformance.matrix import ENVIRONMENTS, MODELS, environment
from equiv_core.conformance.record import (
    STATUS_FILE,
    CellRecord,
    CellState,
    EnvironmentRecord,
    EnvironmentStatus,
    FirstDifference,
    read_environments,
)
from equiv_core.conformance.status import build_status, read_status, write_status
from equiv_core.conformance.table import render_table, table_rows
from equiv_core.conformance.vectors import SteeringTask, steering_task, write_vectors
from equiv_core.findings.verdict import Verdict
from equiv_core.jobs.conformance import README_END, README_START
from equiv_core.models.architecture import find_decoder_layers, hidden_states_of, with_hidden_states
from equiv_core.models.load import load_model

MODEL = "tiny-llama"
SOURCE = "tests/test_conformance.py"


def _forward_hook(layer: int, change: Callable[[torch.Tensor, int], torch.Tensor]) -> Callable[[Any, Any], Any]:
    """A hooks-form steering function: ``change(hidden, pass)`` at block ``layer``'s output, the hook removed on
    exit."""

    @contextmanager
    def steer(model: Any, _tokenizer: Any) -> Iterator[None]:
        passes = 0

        def hook(_module: Any, _args: Any, output: Any) -> Any:
            nonlocal passes
            passes += 1
            return with_hidden_states(output, change(hidden_states_of(output), passes))

        handle = find_decoder_layers(model)[1][layer].register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    return steer


def _adding(task: SteeringTask, when: Callable[[int, torch.Tensor], bool], extra: float = 0.0) -> Any:
    assert task.vectors is not None
    added = task.scale * task.vectors[0] + extra
    return _forward_hook(task.layers[0], lambda hidden, step: hidden + added if when(step, hidden) else hidden)


@pytest.fixture(scope="module")
def vectors(tmp_path_factory: pytest.TempPathFactory) -> dict[Intent, Path]:
    loaded = load_model(MODEL)
    return write_vectors(loaded.model, loaded.tokenizer, tmp_path_factory.mktemp("vectors"))


def _cell(way: Way, vectors: dict[Intent, Path], tmp_path: Path, vector_file: Path | None = None) -> CellRecord:
    loaded = load_model(MODEL)
    length = len(loaded.tokenizer("The weather today is", add_special_tokens=False).input_ids)
    layers = len(find_decoder_layers(loaded.model)[1])
    task = steering_task(way.intent, vector_file or vectors.get(way.intent), layers, length, 5, tmp_path)
    place = CellPlace(environment("nnsight-0.8.1"), "test", way, MODEL)
    return run_way(place, task, lambda token: str(loaded.tokenizer.decode([token])))


def test_steering_at_every_position_of_every_pass_is_supported_for_actadd_all(
    vectors: dict[Intent, Path], tmp_path: Path
) -> None:
    cell = _cell(Way(Intent.ACTADD_ALL, SOURCE, lambda task: _adding(task, lambda _s, _h: True)), vectors, tmp_path)
    assert cell.state is CellState.SUPPORTED, cell.reason
    assert cell.logits_bit_identical and cell.first_difference is None


def test_steering_that_skips_decode_passes_is_silently_wrong_with_its_grid_and_first_differing_token(
    vectors: dict[Intent, Path], tmp_path: Path
) -> None:
    way = Way(Intent.ACTADD_ALL, SOURCE, lambda task: _adding(task, lambda _s, hidden: hidden.shape[1] > 1))
    cell = _cell(way, vectors, tmp_path)
    assert cell.state is CellState.SILENTLY_WRONG
    assert "touched step 0 only" in cell.reason
    assert any("o" in line.split("|")[-1] for line in cell.grid if line.strip().startswith("step 1"))
    assert cell.first_difference is not None and cell.library_ids != cell.reference_ids
    assert cell.library_ids[cell.first_difference.step] == cell.first_difference.library_id


def test_steering_that_changes_nothing_is_silently_wrong_never_equivalent(
    vectors: dict[Intent, Path], tmp_path: Path
) -> None:
    way = Way(Intent.ACTADD_ALL, SOURCE, lambda _task: lambda _model, _tokenizer: nullcontext())
    cell = _cell(way, vectors, tmp_path)
    assert cell.state is CellState.SILENTLY_WRONG
    assert "steering not applied" in cell.reason


def test_the_intended_cells_and_ids_with_logits_beyond_the_noise_floor_are_supported_degraded(
    vectors: dict[Intent, Path], tmp_path: Path
) -> None:
    way = Way(Intent.ACTADD_ALL, SOURCE, lambda task: _adding(task, lambda _s, _h: True, extra=1e-4))
    cell = _cell(way, vectors, tmp_path)
    assert cell.state is CellState.SUPPORTED_DEGRADED, cell.reason
    assert cell.ids_equal and cell.touched_as_intended
    assert cell.logits_max_abs_diff is not None and cell.noise_floor is not None
    assert cell.logits_max_abs_diff > cell.noise_floor


def test_a_module_left_on_the_model_that_changes_no_later_output_is_recorded_but_not_wrong(
    vectors: dict[Intent, Path], tmp_path: Path
) -> None:
    def leaves_a_module(task: SteeringTask) -> Any:
        steer = _adding(task, lambda _s, _h: True)

        def wrapped(model: Any, tokenizer: Any) -> Any:
            model.generator = torch.nn.Identity()  # as nnsight 0.7 attaches its generator module
            return steer(model, tokenizer)

        return wrapped

    cell = _cell(Way(Intent.ACTADD_ALL, SOURCE, leaves_a_module), vectors, tmp_path)
    assert cell.state is CellState.SUPPORTED, cell.reason
    assert cell.left_behind and "generator" in cell.left_behind[0]


def test_steering_left_active_after_it_returned_is_silently_wrong(vectors: dict[Intent, Path], tmp_path: Path) -> None:
    def never_removed(task: SteeringTask) -> Any:
        assert task.vectors is not None
        added, layer = task.scale * task.vectors[0], task.layers[0]

        def steer(model: Any, _tokenizer: Any) -> Any:
            block = find_decoder_layers(model)[1][layer]
            block.register_forward_hook(lambda _m, _a, out: with_hidden_states(out, hidden_states_of(out) + added))
            return nullcontext()

        return steer

    cell = _cell(Way(Intent.ACTADD_ALL, SOURCE, never_removed), vectors, tmp_path)
    assert cell.state is CellState.SILENTLY_WRONG
    assert "hooks_removed: " in cell.reason and "differs from the one before it" in cell.reason


def test_a_library_that_raises_is_an_error_naming_the_step_and_where(
    vectors: dict[Intent, Path], tmp_path: Path
) -> None:
    def fails_on_decode(hidden: torch.Tensor, step: int) -> torch.Tensor:
        if step > 1:
            raise IndexError("index 3 is out of bounds for dimension 0 with size 1")
        return hidden

    way = Way(Intent.ORIGINAL_ZERO, SOURCE, lambda task: _forward_hook(task.layers[0], fails_on_decode))
    cell = _cell(way, vectors, tmp_path)
    assert cell.state is CellState.ERROR
    assert cell.reason.startswith("raised at step 1 (decode): IndexError: index 3 is out of bounds")
    assert "in fails_on_decode)" in cell.reason


def test_a_way_the_library_cannot_say_is_not_expressible_with_its_reason_and_runs_nothing(tmp_path: Path) -> None:
    way = Way(Intent.ORIGINAL_ZERO, SOURCE, not_expressible="no position selector (its docs)")
    task = steering_task(Intent.ORIGINAL_ZERO, None, 2, 4, 5, tmp_path)
    cell = run_way(CellPlace(environment("nnsight-0.8.1"), "test", way, MODEL), task, str)
    assert (cell.state, cell.reason, cell.seconds) == (CellState.NOT_EXPRESSIBLE, "no position selector (its docs)", 0)


def _generating(body: Callable[[Any], Any]) -> Any:
    """A generate-form way whose function runs ``body(model)`` and then Hugging Face generate on what it returns."""

    def build(_task: SteeringTask) -> Any:
        def steer(model: Any, _tok: Any, input_ids: Any, attention_mask: Any, new: int, kwargs: Any) -> Any:
            return body(model).generate(
                input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=new, **kwargs
            )

        return steer

    return build


def test_a_library_that_removes_hooks_it_did_not_register_is_silently_wrong(
    vectors: dict[Intent, Path], tmp_path: Path
) -> None:
    def clear_every_hook(model: Any) -> Any:  # what pyvene 0.1.8's generate does
        for module in model.modules():
            module._forward_hooks.clear()
            module._forward_pre_hooks.clear()
        return model

    cell = _cell(Way(Intent.ACTADD_ALL, SOURCE, _generating(clear_every_hook), Form.GENERATE), vectors, tmp_path)
    assert cell.state is CellState.SILENTLY_WRONG
    assert cell.reason.startswith("removed hooks it did not register from the model")


def test_a_generation_the_observer_cannot_see_is_no_reference_never_the_librarys_fault(
    vectors: dict[Intent, Path], tmp_path: Path
) -> None:
    way = Way(Intent.ACTADD_ALL, SOURCE, _generating(copy.deepcopy), Form.GENERATE)  # generates with another object
    cell = _cell(way, vectors, tmp_path)
    assert cell.state is CellState.NO_REFERENCE
    assert "could not be judged" in cell.reason and "cannot observe this code" in cell.reason


class _BreaksLaterGenerations:
    """Steers nothing; on exit leaves a hook that raises, so the harness's unsteered-after generation fails."""

    def __init__(self, model: Any, _tokenizer: Any) -> None:
        self.model = model

    def __enter__(self) -> None:
        return None

    def __exit__(self, *_exc: object) -> None:
        def fail(*_args: Any) -> None:
            raise RuntimeError("a hook left behind that raises")

        self.model.lm_head.register_forward_hook(fail)


def test_a_finding_the_harness_could_not_make_is_no_reference(vectors: dict[Intent, Path], tmp_path: Path) -> None:
    cell = _cell(Way(Intent.ACTADD_ALL, SOURCE, lambda _task: _BreaksLaterGenerations), vectors, tmp_path)
    assert cell.state is CellState.NO_REFERENCE
    assert cell.reason.startswith("the harness could not judge it: ")
    assert "the harness failed: generating raised RuntimeError: a hook left behind that raises" in cell.reason


def test_an_intent_that_changes_nothing_even_in_the_reference_is_no_reference(
    vectors: dict[Intent, Path], tmp_path: Path
) -> None:
    negligible = tmp_path / "negligible.pt"
    torch.save(torch.full((1, 64), 1e-30), negligible)  # tiny-llama's hidden size
    way = Way(Intent.ACTADD_ALL, SOURCE, lambda task: _adding(task, lambda _s, _h: True))
    cell = _cell(way, vectors, tmp_path, vector_file=negligible)
    assert cell.state is CellState.NO_REFERENCE
    assert "does not change the output even in the raw-hook reference" in cell.reason


def test_a_way_has_either_a_steering_function_or_a_reason() -> None:
    with pytest.raises(ValueError, match="either steer or a not_expressible reason"):
        Way(Intent.ACTADD_ALL, SOURCE)
    with pytest.raises(ValueError, match="either steer or a not_expressible reason"):
        Way(Intent.ACTADD_ALL, SOURCE, lambda task: task, not_expressible="both")


def test_an_adapter_lists_the_intents_it_says_nothing_about() -> None:
    adapter = Adapter("lib", (Way(Intent.ACTADD_ALL, SOURCE, not_expressible="no"),))
    assert adapter.missing() == (Intent.CAA_GENERATED, Intent.ORIGINAL_ZERO, Intent.ABLATE_ALL)


def _record(
    environment_id: str, states: dict[str, CellState], status: EnvironmentStatus = EnvironmentStatus.RAN
) -> EnvironmentRecord:
    library, _, version = environment_id.rpartition("-")
    cells = tuple(
        CellRecord(
            library=library,
            version=version,
            intent=Intent(intent),
            variant=Variant.IDIOMATIC,
            model=model,
            state=state,
            reason=f"{state} because",
            follows="docs",
            form=Form.HOOKS,
            first_difference=FirstDifference(1, 5, 6, " a", " b") if state is CellState.SILENTLY_WRONG else None,
            grid=("step 0  # #",),
        )
        for key, state in states.items()
        for intent, model in [key.split("/")]
    )
    return EnvironmentRecord(
        environment=environment_id,
        library=library,
        version=version,
        status=status,
        reason="" if status is EnvironmentStatus.RAN else "install failed: no matching distribution",
        versions={"torch": "2.13.0", "python": "3.11"},
        models=tuple(dict.fromkeys(key.split("/")[1] for key in states)),
        cells=cells,
    )


def test_environment_records_and_the_status_file_read_back_as_written(tmp_path: Path) -> None:
    ran = _record(
        "lib-1.0", {"actadd-all/tiny-gpt2": CellState.SUPPORTED, "caa-generated/tiny-gpt2": CellState.SILENTLY_WRONG}
    )
    failed = _record("other-2.0", {}, EnvironmentStatus.UNSUPPORTED)
    ran.write(tmp_path)
    failed.write(tmp_path)
    records = read_environments(tmp_path)
    assert records == [ran, failed]
    status = build_status(records, tuple(Intent))
    path = write_status(status, tmp_path / "conformance-status.json")
    assert read_environments(tmp_path) == [ran, failed]  # the status file is not read as a record
    assert read_status(path) == status
    assert json.loads(path.read_text())["states"]["SILENTLY_WRONG"] == 1


def test_a_file_that_is_not_a_record_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "stray.json").write_text('{"format": 99}')
    with pytest.raises(ValueError, match="stray.json: not a conformance record"):
        read_environments(tmp_path)


def test_the_table_shows_one_state_when_the_models_agree_and_each_models_where_they_differ() -> None:
    agree = {"actadd-all/tiny-gpt2": CellState.SUPPORTED, "actadd-all/tiny-llama": CellState.SUPPORTED}
    differ = {"caa-generated/tiny-gpt2": CellState.SUPPORTED, "caa-generated/tiny-llama": CellState.ERROR}
    status = build_status([_record("lib-1.0", agree | differ)], tuple(Intent))
    [row] = table_rows(status)[2:]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:5] == ["lib", "1.0", "idiomatic", "SUPPORTED", "tiny-gpt2: SUPPORTED<br>tiny-llama: **ERROR**"]
    assert cells[5:] == ["—", "—"]  # no way written for those intents


def test_the_table_explains_each_cell_that_is_not_supported_with_its_first_differing_token() -> None:
    status = build_status([_record("lib-1.0", {"actadd-all/tiny-gpt2": CellState.SILENTLY_WRONG})], tuple(Intent))
    text = render_table(status)
    assert "- **lib 1.0, actadd-all (idiomatic), tiny-gpt2: SILENTLY_WRONG**" in text
    assert "First differing token: step 1, library ' a' (5) vs reference ' b' (6)" in text
    assert "step 0  # #" in text


def test_an_environment_that_could_not_be_built_is_a_row_with_its_reason() -> None:
    status = build_status([_record("other-2.0", {}, EnvironmentStatus.UNSUPPORTED)], tuple(Intent))
    assert "unsupported: install failed: no matching distribution" in table_rows(status)[2]


def test_every_environment_of_the_matrix_has_an_adapter_module_and_a_test_module() -> None:
    root = Path(__file__).parents[1]
    for env in ENVIRONMENTS:
        assert (root / "src/equiv_core/conformance/libraries" / f"{env.module}.py").is_file(), env.id
        assert (root / "tests/conformance" / f"test_{env.module}.py").is_file(), env.id


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--environment", "nope-1.0"], "--environment: no conformance environment 'nope-1.0'; valid: nnsight-0.8.1"),
        (["--environment", "pyvene-0.1.8", "--models", "gpt5"], "--models 'gpt5': valid: a comma-separated subset"),
        (["--environment", "pyvene-0.1.8", "--intents", "all"], "--intents 'all': valid: a comma-separated subset"),
    ],
)
def test_conformance_cell_refuses_bad_arguments_in_one_line_exit_2(
    options: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["conformance-cell", *options, "--no-mlflow"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert expected in line


def test_conformance_report_without_records_says_how_to_make_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["conformance-report", "--results", str(tmp_path), "--no-mlflow"]) == 2
    assert "run `.venv/bin/nox -s conformance` first" in capsys.readouterr().err


def _full_run(directory: Path) -> None:
    """A record of every environment of the matrix, every model and intent SUPPORTED."""
    for env in ENVIRONMENTS:
        states = {f"{intent}/{model}": CellState.SUPPORTED for intent in Intent for model in MODELS}
        _record(env.id, states).write(directory)


def test_conformance_report_writes_the_table_the_status_the_snapshot_and_the_readme_between_its_markers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _full_run(tmp_path / "results")
    readme, snapshot = tmp_path / "README.md", tmp_path / "bench"
    readme.write_text(f"intro\n{README_START}\nold table\n{README_END}\nafter\n")
    snapshot.mkdir()
    results = str(tmp_path / "results")
    options = ["--readme", str(readme), "--snapshot", str(snapshot), "--no-mlflow"]
    assert main(["conformance-report", "--results", results, *options]) == 0
    text = readme.read_text()
    assert "old table" not in text and text.startswith("intro\n") and text.endswith(f"{README_END}\nafter\n")
    assert "| nnsight | 0.8.1 | idiomatic | SUPPORTED | SUPPORTED | SUPPORTED | SUPPORTED |" in text
    assert read_status(tmp_path / "results" / "conformance-status.json").cells[0].state is CellState.SUPPORTED
    table = (tmp_path / "results" / "TABLE.md").read_text()
    assert table in capsys.readouterr().out and (snapshot / "CONFORMANCE.md").read_text() == table
    assert read_status(snapshot / "conformance-status.json") == read_status(tmp_path / "results" / STATUS_FILE)


def test_a_partial_run_never_replaces_the_readmes_table_or_the_snapshot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _record("pyvene-0.1.8", {"actadd-all/tiny-gpt2": CellState.SUPPORTED}).write(tmp_path / "results")
    readme, snapshot = tmp_path / "README.md", tmp_path / "bench"
    readme.write_text(f"intro\n{README_START}\nthe full table\n{README_END}\n")
    snapshot.mkdir()
    results = str(tmp_path / "results")
    options = ["--readme", str(readme), "--snapshot", str(snapshot), "--no-mlflow"]
    assert main(["conformance-report", "--results", results, *options]) == 0
    assert "the full table" in readme.read_text() and not list(snapshot.iterdir())
    err = capsys.readouterr().err
    assert "not a full run (no record of nnsight-0.8.1;" in err and "pyvene-0.1.8 without tiny-llama" in err
    assert (tmp_path / "results" / "TABLE.md").is_file()  # the partial table itself is written


def test_records_of_environments_no_longer_in_the_matrix_are_left_out_of_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _record("nnsight-0.8.1", {"actadd-all/tiny-gpt2": CellState.SUPPORTED}).write(tmp_path)
    _record("oldlib-0.1", {"actadd-all/tiny-gpt2": CellState.ERROR}).write(tmp_path)
    assert main(["conformance-report", "--results", str(tmp_path), "--no-mlflow"]) == 0
    captured = capsys.readouterr()
    assert "left out of the table: oldlib-0.1" in captured.err
    assert [e.environment for e in read_status(tmp_path / "conformance-status.json").environments] == ["nnsight-0.8.1"]


def test_a_readme_without_markers_is_refused_before_anything_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _record("nnsight-0.8.1", {"actadd-all/tiny-gpt2": CellState.SUPPORTED}).write(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    assert main(["conformance-report", "--results", str(tmp_path), "--readme", str(readme), "--no-mlflow"]) == 2
    assert "has no conformance markers" in capsys.readouterr().err
    assert not (tmp_path / "conformance-status.json").exists() and not (tmp_path / "TABLE.md").exists()


def test_a_cell_record_round_trips_through_json_unchanged() -> None:
    cell = _record("lib-1.0", {"actadd-all/tiny-gpt2": CellState.SILENTLY_WRONG}).cells[0]
    cell = replace(cell, library_ids=(1, 2), reference_ids=(1, 3), findings={"coverage": Verdict.FAIL})
    from dataclasses import asdict

    assert CellRecord.from_dict(json.loads(json.dumps(asdict(cell)))) == cell
