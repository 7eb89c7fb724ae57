"""One audit cell: in the current environment, run the findings on each model and record what could drift.

Recorded per model (:class:`equiv_core.audit.record.ModelRecord`): every finding's verdict, the block output form,
what the original study's literal ``block.output[0][idx] = 0.0`` edits here, whether each steering arm changed the
output, what each known-bad pattern does, and token ids and logits (hashes in the record, tensors in a side
``.npz``) so cells can be compared bit for bit.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.prepare import prepare_run
from equiv_core.arms.steering import Edit, NotExpressible
from equiv_core.audit.matrix import AUDITED
from equiv_core.audit.mlflow_source import CELL_ARTIFACT
from equiv_core.audit.probes import (
    CONTROL_PITFALLS,
    PITFALLS,
    STEP_WINDOW,
    LiteralEffect,
    code_after_unbounded_iter,
    literal_output0_edit,
    pitfall_generate,
    step_window,
)
from equiv_core.audit.record import (
    ArmOutcome,
    CellRecord,
    CellStatus,
    FindingVerdict,
    LiteralEdit,
    ModelRecord,
    Pitfall,
    PitfallOutcome,
)
from equiv_core.bench.arms import ARMS
from equiv_core.config.catalog import DEFAULT_MAX_NEW_TOKENS, DEFAULT_PROMPT, ArmName
from equiv_core.config.run import RunConfig, validate_config
from equiv_core.findings.comparison import tensor_sha256
from equiv_core.findings.runner import run_findings
from equiv_core.findings.verdict import Verdict
from equiv_core.models.provenance import package_version
from equiv_core.spec.recipes import RECIPES
from equiv_core.support.errors import error_line
from equiv_core.tracking.schema import VERSION_SUFFIX, Param, RunKind, Tag
from equiv_core.tracking.store import TrackedRun, Tracker

RECORDED_PACKAGES = (*AUDITED, "numpy")  # the versions every cell records: the pinned packages, and numpy


def literal_meaning(effect: LiteralEffect, prompt_length: int) -> str:
    """Plain words for what ``output[0][index] = 0.0`` zeroed."""
    if effect.error is not None:
        return f"raises {effect.error.split(':')[0]}"
    zeroed = effect.zeroed
    if zeroed == ((0, effect.index % prompt_length),):
        return f"position {effect.index % prompt_length} of batch 0 (the intended edit)"
    if zeroed == tuple((0, position) for position in range(prompt_length)):
        return "every position of batch row 0 (the whole sequence)"
    return f"zeroes (batch, position) {[list(pair) for pair in zeroed or ()]}"


def _arms(context: SteeringContext, max_new_tokens: int, layer: int) -> tuple[dict[str, ArmOutcome], dict[str, Any]]:
    """Every benchmark arm once: ids, logits hash, did it steer, does it match the hook; plus the logits."""
    input_ids = context.encode(DEFAULT_PROMPT)
    records: dict[str, Any] = {}
    tensors: dict[str, Any] = {}
    for arm in ARMS.names():
        if arm == "floor":  # no nnsight in it, and compiling it costs a minute per cell: the benchmark's business
            continue
        try:
            records[arm] = ARMS.get(arm).run(context, input_ids, max_new_tokens, layer)
        except Exception as error:  # noqa: BLE001 - an arm that cannot run on this version is a result
            records[arm] = error_line(error)[:300]
    hook, unsteered = records[ArmName.HOOK], records[ArmName.UNSTEERED]
    summary: dict[str, ArmOutcome] = {}
    for arm, record in records.items():
        if isinstance(record, str):
            summary[arm] = ArmOutcome(error=record)
            continue
        tensors[arm] = record.step_logits.numpy()
        steered = ARMS.get(arm).steered
        summary[arm] = ArmOutcome(
            ids=tuple(record.generated_ids),
            logits_sha256=tensor_sha256(record.step_logits),
            steering_applied=(record.generated_ids != unsteered.generated_ids)
            if steered and not isinstance(unsteered, str)
            else None,
            ids_match_hook=(record.generated_ids == hook.generated_ids)
            if steered and not isinstance(hook, str)
            else None,
        )
    return summary, tensors


def probe_pitfalls(
    context: SteeringContext, max_new_tokens: int, hook: tuple[int, ...], unsteered: tuple[int, ...]
) -> dict[str, PitfallOutcome]:
    """Run each known-bad pattern and say what this version does with it: raise (good), or return ids that
    are steered (``hook``: the raw-hook ids of the same edit) or silently ``unsteered`` (the dangerous case)."""
    input_ids = context.encode(DEFAULT_PROMPT)
    edit = Edit(0, int(input_ids.shape[1]) - 1)
    outcomes: dict[str, PitfallOutcome] = {}
    for pitfall, description in PITFALLS.items():
        try:
            ids = tuple(pitfall_generate(context.nnsight, pitfall, input_ids, max_new_tokens, edit))
        except NotExpressible as reason:
            outcomes[pitfall] = PitfallOutcome(Pitfall.NOT_EXPRESSIBLE, str(reason), description)
            continue
        except Exception as error:  # noqa: BLE001 - raising is the correct behaviour being probed
            outcomes[pitfall] = PitfallOutcome(Pitfall.RAISES, error_line(error)[:300], description)
            continue
        outcome = Pitfall.UNSTEERED if ids == unsteered else Pitfall.STEERED if ids == hook else Pitfall.OTHER_IDS
        outcomes[pitfall] = PitfallOutcome(outcome, f"ids {list(ids)}", description)
    return outcomes | probe_control_pitfalls(context, max_new_tokens)


def probe_control_pitfalls(context: SteeringContext, max_new_tokens: int) -> dict[str, PitfallOutcome]:
    """What runs, and when, in two step-loop patterns (:data:`~equiv_core.audit.probes.CONTROL_PITFALLS`): ``correct``,
    ``silently skipped`` (the code never ran, no error), ``wrong steps [..]`` (a window fired elsewhere, no error)
    or ``raises``. The edit is at index -1, valid at every step with the KV cache."""
    input_ids = context.encode(DEFAULT_PROMPT)
    edit = Edit(0, -1)
    outcomes: dict[str, PitfallOutcome] = {}
    description = CONTROL_PITFALLS["code_after_unbounded_iter"]
    try:
        ran = code_after_unbounded_iter(context.nnsight, input_ids, max_new_tokens, edit)
        outcomes["code_after_unbounded_iter"] = PitfallOutcome(
            Pitfall.CORRECT if ran else Pitfall.SILENTLY_SKIPPED,
            "the code after the loop ran"
            if ran
            else "generation ended without error; the code after the loop never ran",
            description,
        )
    except NotExpressible as reason:
        outcomes["code_after_unbounded_iter"] = PitfallOutcome(Pitfall.NOT_EXPRESSIBLE, str(reason), description)
    except Exception as error:  # noqa: BLE001 - raising is a safe behaviour being probed
        outcomes["code_after_unbounded_iter"] = PitfallOutcome(Pitfall.RAISES, error_line(error)[:300], description)
    description = CONTROL_PITFALLS["step_window"]
    wanted = tuple(range(*STEP_WINDOW))
    try:
        steps = step_window(context.nnsight, input_ids, max_new_tokens, edit)
        outcome = Pitfall.CORRECT if steps == wanted else Pitfall.SILENTLY_SKIPPED if not steps else Pitfall.WRONG_STEPS
        outcomes["step_window"] = PitfallOutcome(outcome, f"fired at generation steps {list(steps)}", description)
    except NotExpressible as reason:
        outcomes["step_window"] = PitfallOutcome(Pitfall.NOT_EXPRESSIBLE, str(reason), description)
    except Exception as error:  # noqa: BLE001
        outcomes["step_window"] = PitfallOutcome(Pitfall.RAISES, error_line(error)[:300], description)
    return outcomes


def audit_recipes(model: str, progress: Callable[[str], None]) -> dict[str, dict[str, FindingVerdict]]:
    """Every steering recipe's spec findings on ``model`` (the catalogue's known-wrong recipes included: the finding
    that flags each, ``coverage`` or ``site``, is expected to FAIL, and a release where it passes has stopped
    catching them)."""
    verdicts = {}
    for name in RECIPES.names():
        report = run_findings(validate_config(RunConfig(model=model, device="cpu", spec=RECIPES.get(name).spec())))
        verdicts[name] = {f.id: FindingVerdict(f.verdict, f.message) for f in report.findings}
        progress(f"recipe {name}: {', '.join(f'{f}={v.verdict}' for f, v in verdicts[name].items())}")
    return verdicts


def audit_model(model: str, progress: Callable[[str], None]) -> tuple[ModelRecord, dict[str, Any]]:
    """Findings, block form, literal-edit meaning, arm outputs and pitfalls of one model in this environment."""
    report = run_findings(validate_config(RunConfig(model=model, device="cpu")), progress=progress)
    context = prepare_run(model, "cpu").context
    input_ids = context.encode(DEFAULT_PROMPT)
    prompt_length = int(input_ids.shape[1])
    last_layer = context.architecture.num_layers - 1
    literal = []
    for index in (-1, prompt_length - 1):
        effect = literal_output0_edit(context.nnsight, input_ids, last_layer, index)
        literal.append(
            LiteralEdit(
                index=index,
                layer=last_layer,
                zeroed=effect.zeroed,
                error=effect.error,
                meaning=literal_meaning(effect, prompt_length),
            )
        )
    arms, tensors = _arms(context, DEFAULT_MAX_NEW_TOKENS, layer=0)
    # The hook and unsteered arms are the same edit and prompt at layer 0: their ids are the probe's references.
    hook_ids, unsteered_ids = arms[ArmName.HOOK].ids, arms[ArmName.UNSTEERED].ids
    pitfalls = probe_pitfalls(context, DEFAULT_MAX_NEW_TOKENS, hook_ids or (), unsteered_ids or ())
    record = ModelRecord(
        block_output_form=context.architecture.block_output_form,
        layers_path=context.architecture.layers_path,
        prompt_length=prompt_length,
        findings={f.id: FindingVerdict(f.verdict, f.message) for f in report.findings},
        literal_output0_edit=tuple(literal),
        arms=arms,
        pitfalls=pitfalls,
        recipes=audit_recipes(model, progress),
        fingerprint=report.fingerprint(),
        weights_sha256=report.weights_sha256,
    )
    return record, tensors


def run_cell(
    cell: str,
    models: tuple[str, ...],
    out_dir: Path,
    tracker: Tracker,
    progress: Callable[[str], None],
    pins: dict[str, str | None] | None = None,
    source: str = "matrix",
) -> CellRecord:
    """Audit every model, write ``<cell>.json`` (a :class:`CellRecord`) and ``<cell>.npz`` to ``out_dir``, log one
    MLflow parent run. ``pins``: the versions the cell asked for (recorded; what is installed is measured).
    ``source``: ``matrix`` (the default audit) or the release search the cell belongs to (e.g. ``bisect-nnsight``),
    tagged so that a report read from a server takes matrix cells only."""
    started = time.perf_counter()
    versions = {name: v for name in RECORDED_PACKAGES if (v := package_version(name))}
    versions["python"] = platform.python_version()
    with tracker.run(
        f"audit {cell}", tags={Tag.KIND: RunKind.AUDIT_CELL, Tag.CELL: cell, Tag.AUDIT_SOURCE: source}
    ) as run:
        run.log(
            params={Param.CELL: cell, "models": ",".join(models)},
            tags={f"{name}{VERSION_SUFFIX}": value for name, value in versions.items()},
        )
        results: dict[str, ModelRecord] = {}
        arrays: dict[str, Any] = {}
        for model in models:
            progress(f"audit {cell}: {model}")
            results[model], tensors = audit_model(model, progress)
            arrays |= {f"{model}/{arm}": values for arm, values in tensors.items()}
        record = CellRecord(
            cell=cell,
            status=CellStatus.RAN,
            pins=dict(pins or {}),
            versions=versions,
            models=results,
            pip_freeze=tuple(sorted(f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions())),
            finished_at=dt.datetime.now(dt.UTC).isoformat(),
            seconds=time.perf_counter() - started,
            mlflow_run_id=run.run_id or None,
        )
        out_dir.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out_dir / f"{record.slug}.npz", **arrays)
        record.write(out_dir)
        _log_cell(run, record)
        run.log_file(out_dir / f"{record.slug}.npz")  # with audit_cell.json: all the report needs (mlflow_source)
    return record


def _log_cell(run: TrackedRun, record: CellRecord) -> None:
    tags: dict[str, Any] = {"status": record.status}
    metrics: dict[str, float] = {}
    for model, result in record.models.items():
        tags |= {f"{model}.{name}": value for name, value in result.observables().items()}
        metrics |= {f"{model}.holds.{name}": float(v.verdict == Verdict.PASS) for name, v in result.findings.items()}
    run.log(tags=tags, metrics=metrics)
    run.log_json(record.to_dict(), CELL_ARTIFACT)
