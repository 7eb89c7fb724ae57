"""One library environment of the conformance matrix: every way of its adapter on every model, each checked by
``equiv check``'s findings against the raw-hook reference of its intent, judged, recorded and logged.

Per model, the intents' vectors are made once (:mod:`equiv_core.conformance.vectors`) and handed to the reference
(as ``--vector FILE``) and to the library (as a :class:`~equiv_core.conformance.vectors.SteeringTask`). Each check
loads the model afresh (a library may change it in place), with the attention kernel the library puts it on, so
that the unsteered runs and the reference run the same way.
"""

from __future__ import annotations

import datetime as dt
import platform
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from equiv_core.config.catalog import DEFAULT_MAX_NEW_TOKENS, DEFAULT_PROMPT
from equiv_core.config.decoding import GREEDY
from equiv_core.conformance.adapter import Adapter, Form, Way
from equiv_core.conformance.intents import Intent, intent_options
from equiv_core.conformance.judge import Judgement, judge
from equiv_core.conformance.matrix import LibraryEnvironment
from equiv_core.conformance.record import CellRecord, CellState, EnvironmentRecord, EnvironmentStatus
from equiv_core.conformance.vectors import SteeringTask, steering_task, write_vectors
from equiv_core.findings.runner import run_findings
from equiv_core.models.architecture import find_decoder_layers
from equiv_core.models.load import load_model, weights_sha256
from equiv_core.models.provenance import package_version
from equiv_core.observe.observer import ObserverRemoved
from equiv_core.support.errors import UserCodeError, UserCodeRaised, error_line
from equiv_core.tracking.schema import VERSION_SUFFIX, RunKind, Tag
from equiv_core.tracking.store import TrackedRun, Tracker
from equiv_core.usercode.checked import checked_config, steering_target

RECORDED_PACKAGES = ("torch", "transformers", "nnsight", "numpy")


def _steering_function(way: Way, task: SteeringTask) -> Any:
    """The function ``equiv check`` observes: the library's way for ``task``, in the way's form (the task is made
    before the check, so nothing of the harness runs inside the observed generation)."""
    assert way.steer is not None
    steer = way.steer(task)

    if way.form is Form.HOOKS:

        def hooks(model: Any, tokenizer: Any) -> Any:
            return steer(model, tokenizer)

        hooks.__qualname__ = f"{way.intent}"
        return hooks

    def generate(
        model: Any, tokenizer: Any, input_ids: Any, attention_mask: Any, max_new_tokens: int, generation_kwargs: Any
    ) -> Any:
        return steer(model, tokenizer, input_ids, attention_mask, max_new_tokens, generation_kwargs)

    generate.__qualname__ = f"{way.intent}"
    return generate


@dataclass(frozen=True, slots=True)
class CellPlace:
    """Which cell: the environment's library at the version installed, the way, the model."""

    environment: LibraryEnvironment
    version: str
    way: Way
    model: str
    weights_sha256: str = ""  # the model's weights as loaded, before any library ran

    def record(
        self, state: CellState, reason: str, seconds: float = 0.0, judged: Judgement | None = None
    ) -> CellRecord:
        """The cell's record: its state and reason, and what the judgement kept (none for a cell not judged)."""
        way = self.way
        record = CellRecord(
            library=self.environment.library,
            version=self.version,
            intent=way.intent,
            variant=way.variant,
            model=self.model,
            state=state,
            reason=reason,
            follows=way.follows,
            form=way.form,
            note=way.note,
            attn_implementation=way.attn_implementation,
            weights_sha256=self.weights_sha256,
            seconds=seconds,
        )
        if judged is None:
            return record
        return replace(
            record,
            touched_as_intended=judged.touched_as_intended,
            ids_equal=judged.ids_equal,
            logits_bit_identical=judged.logits_bit_identical,
            logits_max_abs_diff=judged.logits_max_abs_diff,
            noise_floor=judged.noise_floor,
            first_difference=judged.first_difference,
            library_ids=judged.library_ids,
            reference_ids=judged.reference_ids,
            grid=judged.grid,
            findings=judged.findings,
            left_behind=judged.left_behind,
            left_behind_total=judged.left_behind_total,
        )


def run_way(place: CellPlace, task: SteeringTask, decode: Callable[[int], str]) -> CellRecord:
    """One cell: ``place.way`` checked on ``place.model`` for ``task``, judged. The library raising is ERROR (the
    step, its error line and where); what cannot be observed, or a harness failure, is NO_REFERENCE."""
    way = place.way
    if way.steer is None:
        assert way.not_expressible is not None
        return place.record(CellState.NOT_EXPRESSIBLE, way.not_expressible)
    started = time.perf_counter()
    try:
        function = _steering_function(way, task)
        config, steering = checked_config(
            function,
            intent_options(way.intent, task.vector_file),
            model=place.model,
            prompts=(DEFAULT_PROMPT,),
            max_new_tokens=task.new_tokens,
            form=way.form,
            device="cpu",
            dtype="float32",
            seed=0,
            padding=None,
            decoding=GREEDY,
            attn_implementation=way.attn_implementation,
        )
        report = run_findings(config, steering=steering)
    except UserCodeRaised as error:  # the library, or the user code written its way, raised while generating
        return place.record(CellState.ERROR, _error_reason(error), time.perf_counter() - started)
    except UserCodeError as error:  # what it did cannot be observed, or it handed back no ids
        seconds = time.perf_counter() - started
        if isinstance(error.__cause__, ObserverRemoved):  # silently: it drops every other hook on the model too
            return place.record(CellState.SILENTLY_WRONG, str(error.__cause__), seconds)
        own = f"{steering_target(function, way.form).describe()}: "  # the message names our wrapper first
        return place.record(CellState.NO_REFERENCE, f"could not be judged: {str(error).removeprefix(own)}", seconds)
    except Exception as error:  # noqa: BLE001 - the harness failed on this cell: recorded, the others go on
        return place.record(
            CellState.NO_REFERENCE, f"the harness failed: {error_line(error)}", time.perf_counter() - started
        )
    judged = judge(report, decode)
    if place.weights_sha256 and report.weights_sha256 != place.weights_sha256:  # the check loaded other weights
        loaded, expected = report.weights_sha256[:12], place.weights_sha256[:12]
        reason = f"the harness failed: the check loaded weights {loaded}, not {expected}"
        return place.record(CellState.NO_REFERENCE, reason, time.perf_counter() - started)
    return place.record(judged.state, judged.reason, time.perf_counter() - started, judged)


def _error_reason(error: UserCodeRaised) -> str:
    """What raised, in one line: when, the error, and the innermost frame: the library's
    (``package/module.py:line in function``), or the adapter's, i.e. user code written the library's way."""
    message = f"raised {error.when}: {error.error}"
    cause = error.__cause__
    if cause is None or cause.__traceback__ is None:
        return message
    frame = traceback.extract_tb(cause.__traceback__)[-1]
    parts = Path(frame.filename).parts
    if "libraries" in parts and "conformance" in parts:
        return f"{message} (in the code written the library's way: {Path(frame.filename).name}:{frame.lineno})"
    short = "/".join(parts[parts.index("site-packages") + 1 :]) if "site-packages" in parts else parts[-1]
    return f"{message} (at {short}:{frame.lineno} in {frame.name})"


def run_environment(
    environment: LibraryEnvironment,
    adapter: Adapter,
    models: tuple[str, ...],
    out_dir: Path,
    tracker: Tracker,
    progress: Callable[[str], None],
    intents: tuple[Intent, ...] = tuple(Intent),
) -> EnvironmentRecord:
    """Every way of ``adapter`` (``environment``'s, loaded with :func:`load_adapter`) for ``intents`` on every
    model; writes ``<environment>.json`` to ``out_dir`` and logs one MLflow run. Raises VersionMismatch where the
    library installed is not the environment's version."""
    started = time.perf_counter()
    version = package_version(adapter.distribution) or "not installed"
    if version != environment.version:
        raise VersionMismatch(f"{adapter.distribution} {version} is installed; the environment is {environment.id}")
    versions = {name: v for name in (adapter.distribution, *RECORDED_PACKAGES) if (v := package_version(name))}
    versions["python"] = platform.python_version()
    tags: dict[str, Any] = {
        Tag.KIND: RunKind.CONFORMANCE_CELL,
        Tag.ENVIRONMENT: environment.id,
        Tag.LIBRARY: environment.library,
    }
    with tracker.run(f"conformance {environment.id}", tags=tags) as run:
        run.log(
            params={"models": ",".join(models), "intents": ",".join(intents)},
            tags={f"{name}{VERSION_SUFFIX}": value for name, value in versions.items()},
        )
        cells: list[CellRecord] = []
        with tempfile.TemporaryDirectory(prefix="equiv-conformance-") as scratch:
            for model in models:
                cells += _model_cells(environment, adapter, version, model, intents, Path(scratch), progress)
        record = EnvironmentRecord(
            environment=environment.id,
            library=environment.library,
            version=version,
            status=EnvironmentStatus.RAN,
            requirements=environment.requirements,
            versions=versions,
            models=models,
            cells=tuple(cells),
            finished_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            seconds=time.perf_counter() - started,
            mlflow_run_id=run.run_id or None,
        )
        path = record.write(out_dir)
        _log_environment(run, record, path)
    return record


def _model_cells(
    environment: LibraryEnvironment,
    adapter: Adapter,
    version: str,
    model: str,
    intents: tuple[Intent, ...],
    scratch: Path,
    progress: Callable[[str], None],
) -> list[CellRecord]:
    loaded = load_model(model)
    files = write_vectors(loaded.model, loaded.tokenizer, scratch / model)
    tokenizer = loaded.tokenizer
    prompt_length = len(tokenizer(DEFAULT_PROMPT, add_special_tokens=False).input_ids)
    num_layers = len(find_decoder_layers(loaded.model)[1])
    weights = weights_sha256(loaded.model)  # as loaded, before any library ran: the same in every environment
    del loaded

    def decode(token: int) -> str:
        return str(tokenizer.decode([token]))

    cells = []
    for way in adapter.ways:
        if way.intent not in intents:
            continue
        workdir = scratch / model / f"{way.intent}-{way.variant}"
        workdir.mkdir(parents=True, exist_ok=True)
        task = steering_task(
            way.intent, files.get(way.intent), num_layers, prompt_length, DEFAULT_MAX_NEW_TOKENS, workdir
        )
        cell = run_way(CellPlace(environment, version, way, model, weights), task, decode)
        progress(f"{environment.id} {model} {way.intent} ({way.variant}): {cell.state} {cell.reason[:160]}")
        cells.append(cell)
    return cells


def _log_environment(run: TrackedRun, record: EnvironmentRecord, path: Path) -> None:
    tags: dict[str, Any] = {Tag.STATUS: record.status}
    for cell in record.cells:
        tags[f"{cell.model}.{cell.intent}.{cell.variant}"] = cell.state
    metrics = {f"cells.{state}": float(sum(cell.state is state for cell in record.cells)) for state in CellState}
    run.log(tags=tags, metrics=metrics)
    run.log_file(path)


class VersionMismatch(RuntimeError):
    """The library installed is not the version its environment names (a stale or hand-changed environment)."""
