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
from pathlib import Path
from typing import Any

from equiv_core.config.catalog import DEFAULT_MAX_NEW_TOKENS, DEFAULT_PROMPT
from equiv_core.config.decoding import GREEDY
from equiv_core.conformance.adapter import Adapter, Form, Way, load_adapter
from equiv_core.conformance.intents import Intent, intent_options
from equiv_core.conformance.judge import judge
from equiv_core.conformance.matrix import LibraryEnvironment
from equiv_core.conformance.record import CellRecord, CellState, EnvironmentRecord, EnvironmentStatus
from equiv_core.conformance.vectors import steering_task, write_vectors
from equiv_core.findings.runner import run_findings
from equiv_core.models.load import load_model
from equiv_core.models.provenance import package_version
from equiv_core.observe.observer import ObserverRemoved
from equiv_core.support.errors import UserCodeError, UserCodeRaised
from equiv_core.tracking.schema import VERSION_SUFFIX, RunKind, Tag
from equiv_core.tracking.store import TrackedRun, Tracker
from equiv_core.usercode.checked import checked_config

RECORDED_PACKAGES = ("torch", "transformers", "nnsight", "numpy")


def _steering_function(way: Way, intent_file: Path | None, prompt_length: int, new_tokens: int, workdir: Path) -> Any:
    """The function ``equiv check`` observes: it makes the task from the model it is handed (the vectors in that
    model's dtype and device), then runs the library's way, in the way's form."""
    assert way.steer is not None
    build = way.steer

    def task_for(model: Any) -> Any:
        return build(steering_task(way.intent, intent_file, model, prompt_length, new_tokens, workdir))

    if way.form is Form.HOOKS:

        def hooks(model: Any, tokenizer: Any) -> Any:
            return task_for(model)(model, tokenizer)

        hooks.__qualname__ = f"{way.intent}"
        return hooks

    def generate(
        model: Any, tokenizer: Any, input_ids: Any, attention_mask: Any, max_new_tokens: int, generation_kwargs: Any
    ) -> Any:
        return task_for(model)(model, tokenizer, input_ids, attention_mask, max_new_tokens, generation_kwargs)

    generate.__qualname__ = f"{way.intent}"
    return generate


def run_way(
    environment: LibraryEnvironment,
    version: str,
    way: Way,
    model: str,
    vector_file: Path | None,
    prompt_length: int,
    decode: Callable[[int], str],
    workdir: Path,
    new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
) -> CellRecord:
    """One cell: ``way`` checked on ``model``, judged. A library that raises is ERROR (its error line)."""
    base = {
        "library": environment.library,
        "version": version,
        "intent": str(way.intent),
        "variant": str(way.variant),
        "model": model,
        "follows": way.follows,
        "form": str(way.form),
        "note": way.note,
        "attn_implementation": way.attn_implementation,
    }
    if way.steer is None:
        assert way.not_expressible is not None
        return CellRecord(**base, state=CellState.NOT_EXPRESSIBLE, reason=way.not_expressible)  # type: ignore[arg-type]
    started = time.perf_counter()
    steer = _steering_function(way, vector_file, prompt_length, new_tokens, workdir)
    config, steering = checked_config(
        steer,
        intent_options(way.intent, vector_file),
        model=model,
        prompts=(DEFAULT_PROMPT,),
        max_new_tokens=new_tokens,
        form=str(way.form),
        device="cpu",
        dtype="float32",
        seed=0,
        padding=None,
        decoding=GREEDY,
        attn_implementation=way.attn_implementation,
    )
    try:
        report = run_findings(config, steering=steering)
    except UserCodeError as error:  # what the library did cannot be observed, or it handed back no ids
        seconds = time.perf_counter() - started
        if isinstance(error.__cause__, ObserverRemoved):  # silently: it drops every other hook on the model too
            return CellRecord(**base, state=CellState.SILENTLY_WRONG, reason=str(error.__cause__), seconds=seconds)  # type: ignore[arg-type]
        reason = "could not be judged: " + str(error).split(": ", 1)[-1]
        return CellRecord(**base, state=CellState.ERROR, reason=reason, seconds=seconds)  # type: ignore[arg-type]
    except UserCodeRaised as error:  # the library raised while generating
        seconds = time.perf_counter() - started
        return CellRecord(**base, state=CellState.ERROR, reason=_error_reason(error), seconds=seconds)  # type: ignore[arg-type]
    judged = judge(report, decode)
    return CellRecord(
        **base,  # type: ignore[arg-type]
        state=judged.state,
        reason=judged.reason,
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
        weights_sha256=report.weights_sha256,
        left_behind=judged.left_behind,
        seconds=time.perf_counter() - started,
    )


def _error_reason(error: UserCodeRaised) -> str:
    """The library's error in one line: when it was raised, the error, and the innermost frame it came from
    (``package/module.py:line in function``)."""
    message = str(error)
    if " raised " in message:  # "<function> raised at step 0 (prefill): ValueError: ..."
        message = "raised " + message.split(" raised ", 1)[1]
    cause = error.__cause__
    if cause is None or cause.__traceback__ is None:
        return message
    frame = traceback.extract_tb(cause.__traceback__)[-1]
    where = Path(frame.filename)
    short = (
        "/".join(where.parts[where.parts.index("site-packages") + 1 :])
        if "site-packages" in where.parts
        else where.name
    )
    return f"{message} (at {short}:{frame.lineno} in {frame.name})"


def run_environment(
    environment: LibraryEnvironment,
    models: tuple[str, ...],
    out_dir: Path,
    tracker: Tracker,
    progress: Callable[[str], None],
    intents: tuple[Intent, ...] = tuple(Intent),
) -> EnvironmentRecord:
    """Every way of ``environment``'s adapter for ``intents`` on every model; writes ``<environment>.json`` to
    ``out_dir`` and logs one MLflow run. Raises ModuleNotFoundError when the library is not installed."""
    started = time.perf_counter()
    adapter = load_adapter(environment.module)
    version = package_version(adapter.distribution) or "not installed"
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
    del loaded

    def decode(token: int) -> str:
        return str(tokenizer.decode([token]))

    cells = []
    for way in adapter.ways:
        if way.intent not in intents:
            continue
        workdir = scratch / model / f"{way.intent}-{way.variant}"
        workdir.mkdir(parents=True, exist_ok=True)
        cell = run_way(environment, version, way, model, files.get(way.intent), prompt_length, decode, workdir)
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


def unsupported(environment: LibraryEnvironment, reason: str, out_dir: Path) -> EnvironmentRecord:
    """The record of an environment whose library could not be imported (``reason``), written to ``out_dir``."""
    record = EnvironmentRecord.not_run(environment, EnvironmentStatus.UNSUPPORTED, reason)
    record.write(out_dir)
    return record
