"""Run findings on one model: validate input, prepare the model, run, collect evidence.

Two modes. Without a steering spec: the original study's five findings (:data:`EXPERIMENTS`). With one: every
arm of the spec is generated once and the spec findings (:data:`SPEC_FINDINGS`) judge it. This is the only place
that calls the preparation, provenance and spec-resolution modules, so findings stay plain functions and every
entry point (CLI, benchmarks, audit, tests) gets the same checks and the same provenance.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import torch

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.nnsight_release import NNSIGHT_VERSION
from equiv_core.arms.prepare import prepare_run
from equiv_core.arms.resolution import resolve_spec
from equiv_core.arms.resolved import ResolvedSpec
from equiv_core.arms.steering import NotExpressible
from equiv_core.config.catalog import known_shape
from equiv_core.config.run import RunConfig, ValidRunConfig, check_layers
from equiv_core.config.validation import (
    check_fits_context,
    check_layer,
    check_prompt_length,
    check_prompt_position,
)
from equiv_core.findings.finding import ExperimentConfig, FindingConfig, FindingResult, NoEvidence
from equiv_core.findings.spec.registered import SPEC_FINDINGS
from equiv_core.findings.spec.spec_finding import SpecFindingConfig
from equiv_core.findings.spec.spec_run import run_spec
from equiv_core.findings.study.registered import EXPERIMENTS
from equiv_core.findings.user.registered import USER_FINDINGS
from equiv_core.findings.user.user_finding import UserFindingConfig
from equiv_core.findings.user.user_run import CheckCost, Phase, UserRun, run_user
from equiv_core.models.adapters import Adapter
from equiv_core.models.architecture import Architecture
from equiv_core.models.determinism import DeterminismReport
from equiv_core.models.inputs import PromptBatch, default_bos_note, encode_prompts
from equiv_core.models.load import weights_sha256
from equiv_core.models.provenance import Environment, environment_info
from equiv_core.support.errors import UserCodeRaised, UserInputError, error_line
from equiv_core.support.machine_load import LoadMonitor, MachineLoad
from equiv_core.support.walltime import RunTimings
from equiv_core.usercode.forms import UserSteering

Progress = Callable[[str], None]
FindingDone = Callable[[FindingResult, float], None]


@dataclass(frozen=True, slots=True)
class RunReport:
    """Everything one run produced, ready to print or to write as JSON."""

    config: RunConfig
    model_source: str
    prompt_ids: tuple[int, ...]
    prompt_tokens: tuple[str, ...]
    architecture: Architecture
    determinism: DeterminismReport
    environment: Environment
    load_seconds: float
    weights_sha256: str
    findings: tuple[FindingResult, ...]
    finding_seconds: dict[str, float]
    timings: RunTimings
    spec: ResolvedSpec | None = None  # the resolved spec, in spec mode (in check mode: the intent)
    checked: str = ""  # check mode: the user's steering, as "FILE.py:NAME (FORM form)"
    check_cost: CheckCost | None = None  # check mode: where the model work went (not part of the fingerprint)
    notes: tuple[str, ...] = ()  # what a reader must know about the encoding (special tokens, padding)
    machine_load: MachineLoad | None = None  # how busy the machine was from the start to the end of the run
    adapter: Adapter | None = None  # the PEFT adapter the model was loaded with, and its base model

    @property
    def all_hold(self) -> bool:
        """Every finding that applies to this input holds (NOT APPLICABLE ones are left out)."""
        return all(finding.holds for finding in self.findings if finding.counts)

    def fingerprint(self) -> str:
        """SHA-256 over weights, prompt ids and every finding's verdict and evidence (token ids, logits
        hashes), excluding timings: two identical runs on one machine must print the same fingerprint."""
        payload = {
            "weights": self.weights_sha256,
            "prompt_ids": list(self.prompt_ids),
            "findings": [finding.to_dict() for finding in self.findings],
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"spec": self.spec.to_dict()} if self.spec is not None else {}
        if self.checked:
            spec["checked"] = self.checked
        if self.check_cost is not None:
            spec["check_cost"] = self.check_cost.to_dict()
        return {
            "model": self.config.model,
            "model_source": self.model_source,
            **({"adapter": self.adapter.to_dict()} if self.adapter is not None else {}),
            "prompt": self.config.prompt_list[0],
            **({"prompts": list(self.config.prompt_list)} if len(self.config.prompt_list) > 1 else {}),
            "prompt_ids": list(self.prompt_ids),
            "prompt_tokens": list(self.prompt_tokens),
            "config": self.config.to_dict(),
            **spec,
            "architecture": self.architecture.to_dict(),
            "determinism": self.determinism.to_dict(),
            "environment": self.environment.to_dict(),
            "load_seconds": self.load_seconds,
            "timings": self.timings.to_dict(),
            "machine_load": self.machine_load.to_dict() if self.machine_load is not None else None,
            "notes": list(self.notes),
            "weights_sha256": self.weights_sha256,
            "all_hold": self.all_hold,
            "fingerprint": self.fingerprint(),
            "findings": [
                {**finding.to_dict(), "seconds": self.finding_seconds[finding.id]} for finding in self.findings
            ],
        }


def _check_input(config: RunConfig, context: SteeringContext, prompt_length: int) -> None:
    """The checks that need the loaded model and tokenizer."""
    check_prompt_length(config.prompt, prompt_length)
    check_fits_context(prompt_length, config.max_new_tokens, context.architecture.max_positions)
    if known_shape(config.model) is None:  # a built-in model's layers were checked with the config
        check_layers(config, context.architecture.num_layers)
    if config.spec is None:
        check_prompt_position(config.position, prompt_length)


def experiment_configs(config: RunConfig, context: SteeringContext) -> dict[str, ExperimentConfig]:
    """Per-experiment configs for this model, after the checks that need the model (layer, position, length)."""
    prompt_length = context.encode(config.prompt).shape[1]
    _check_input(config, context, prompt_length)
    num_layers = context.architecture.num_layers
    layer = check_layer(0 if config.layer is None else config.layer, num_layers)
    base = ExperimentConfig(config.prompt, config.max_new_tokens, layer, config.position)
    return {
        name: replace(base, layer=num_layers - 1) if EXPERIMENTS.get(name).uses_last_layer else base
        for name in config.findings
    }


def _guarded(name: str, title: str, config: FindingConfig, work: Callable[[], FindingResult]) -> FindingResult:
    """Run one finding's work; an unexpected exception is a failed finding with its cause, not a crashed run."""
    try:
        return work()
    except UserInputError:
        raise
    except NotExpressible as reason:
        message = f"not expressible on nnsight {NNSIGHT_VERSION}: {reason}"
        evidence = NoEvidence("not_expressible", str(reason))
        return FindingResult(name, title, False, message, evidence, config, expressible=False)
    except Exception as error:  # noqa: BLE001 - reported as the finding's failure, with the traceback tail
        message = _raised(error)
        return FindingResult(name, title, False, message, NoEvidence("exception", message), config)


def _raised(error: Exception) -> str:
    where = traceback.extract_tb(error.__traceback__)[-1]
    return f"raised {error_line(error)} (at {where.filename}:{where.lineno})"


def _run_one(name: str, context: SteeringContext, config: ExperimentConfig) -> FindingResult:
    experiment = EXPERIMENTS.get(name)
    return _guarded(name, experiment.title, config, lambda: experiment.run(context, config))


def _study_notes(context: SteeringContext, config: RunConfig) -> tuple[str, ...]:
    """The five findings encode the prompt as written, without special tokens: say so, and warn where a plain
    string invoke would see more positions."""
    batch = encode_prompts(context.loaded.tokenizer, (config.prompt,), context.device)
    bos = default_bos_note(context.loaded.tokenizer, batch)
    return ("encoding: the prompt as written, no special tokens added",) + ((f"warning: {bos}",) if bos else ())


def _batch_notes(context: SteeringContext, batch: PromptBatch) -> tuple[str, ...]:
    """Which special or template tokens the encoding added, where, and how rows were padded."""
    how = (
        "a chat template"
        if batch.chat_template
        else "special tokens"
        if batch.add_special_tokens
        else "no special tokens"
    )
    layout = (
        f"the prefix ({batch.prefix_length} tokens) then the prompt ({batch.lengths[0] - batch.prefix_length} "
        "tokens), no padding"
        if batch.prefix_length
        else f"{batch.size} prompt{'s' if batch.size > 1 else ''}, {batch.padding} padding to {batch.padded_length} "
        f"columns (lengths {', '.join(map(str, batch.lengths))})"
    )
    notes = [f"encoding: {how}; {layout}"]
    for row, added in enumerate(batch.added):
        if added:
            shown = ", ".join(f"{token.token}@{token.position}" for token in added[:8])
            more = f", ... ({len(added)} in all)" if len(added) > 8 else ""
            notes.append(f"row {row}: tokens added around the prompt (token@position) {shown}{more}")
    bos = default_bos_note(context.loaded.tokenizer, batch)
    if bos:
        notes.append(f"warning: {bos}")
    return tuple(notes)


def _spec_findings(
    config: RunConfig, context: SteeringContext, resolved: ResolvedSpec, say: Progress
) -> Iterator[tuple[FindingResult, float]]:
    """Generate every arm once, then judge each spec finding; a failure to generate fails every finding."""
    finding_config = SpecFindingConfig(config.prompt_list, config.max_new_tokens, resolved.spec)
    return _judged(
        config.findings,
        finding_config,
        "generating the arms",
        partial(run_spec, context, resolved, say),
        lambda name, run: partial(SPEC_FINDINGS.get(name).judge, run, finding_config),
        lambda name: SPEC_FINDINGS.get(name).title,
        say,
    )


def _user_findings(
    config: RunConfig,
    context: SteeringContext,
    resolved: ResolvedSpec,
    steering: UserSteering,
    say: Progress,
    cost: Callable[[CheckCost], None],
) -> Iterator[tuple[FindingResult, float]]:
    """Generate unsteered, the reference and the user's steering (observed) once, then judge each user finding.

    The user's steering raising is not a finding's failure: :class:`~equiv_core.support.errors.UserCodeRaised` and
    :class:`~equiv_core.support.errors.UserCodeError` go up to the command (exit 1 and 2)."""
    target = steering.target
    finding_config = UserFindingConfig(
        config.prompt_list, config.max_new_tokens, resolved.spec, target.describe(), str(steering.form)
    )
    return _judged(
        config.findings,
        finding_config,
        "generating",
        partial(_costed, cost, partial(run_user, context, resolved, steering, say, _phases(config.findings))),
        lambda name, run: partial(USER_FINDINGS.get(name).judge, run, finding_config),
        lambda name: USER_FINDINGS.get(name).title,
        say,
        passes_through=(UserCodeRaised,),
    )


def _phases(names: tuple[str, ...]) -> frozenset[Phase]:
    """The generations the chosen user findings read (``equiv check --only coverage`` makes none of them)."""
    return frozenset(phase for name in names for phase in USER_FINDINGS.get(name).needs)


def _costed(cost: Callable[[CheckCost], None], generate: Callable[[], UserRun]) -> UserRun:
    run = generate()
    if run.cost is not None:
        cost(run.cost)
    return run


def _judged(
    names: tuple[str, ...],
    finding_config: FindingConfig,
    what: str,
    generate: Callable[[], Any],
    judge: Callable[[str, Any], Callable[[], FindingResult]],
    title: Callable[[str], str],
    say: Progress,
    passes_through: tuple[type[Exception], ...] = (),
) -> Iterator[tuple[FindingResult, float]]:
    """Run ``generate`` once, then each finding's judge on its result, with the seconds each took (generating
    counts towards the first); a failure to generate fails every finding with its cause."""
    started = time.perf_counter()
    run: Any = None
    failure = ""
    try:
        run = generate()
    except UserInputError:
        raise
    except passes_through:
        raise
    except Exception as error:  # noqa: BLE001 - every finding fails with the cause
        failure = f"{what} {_raised(error)}"
    generating = time.perf_counter() - started
    for index, name in enumerate(names, start=1):
        say(f"[{index}/{len(names)}] {name} ...")
        started = time.perf_counter()
        if run is None:
            evidence = NoEvidence("exception", failure)
            result = FindingResult(name, title(name), False, failure, evidence, finding_config)
        else:
            result = _guarded(name, title(name), finding_config, judge(name, run))
        yield result, time.perf_counter() - started + generating
        generating = 0.0


def run_findings(
    config: ValidRunConfig,
    progress: Progress | None = None,
    on_finding: FindingDone | None = None,
    load: LoadMonitor | None = None,
    device: torch.device | None = None,
    steering: UserSteering | None = None,
) -> RunReport:
    """Prepare the model and run each chosen finding of ``config`` (checked at the edge: :func:`validate_config`)
    in registry order, on ``device`` (None: ``config.device``, resolved here).

    ``on_finding`` is called as each finding completes (e.g. to log it at once, so it survives a later crash).
    ``load`` (``equiv run``'s, started with the command) watches how busy the machine is: a busy machine is said
    early in the run, with what to do, and recorded in the report; without it (the bench's findings, the audit:
    they judge the machine their own way) nothing is watched. ``steering``: check mode (``config.check``), the
    user's steering as loaded, judged against ``config.spec``. Raises UserInputError for input that only the loaded
    model can refuse (a layer of a model whose shape is not in the catalogue, a prompt too long), before any
    generation.
    """
    watch = _BusyWatch(load, progress or (lambda _message: None))
    say = watch.say
    preparing = time.perf_counter()
    where = device if device is not None else config.device
    prepared = prepare_run(
        config.model, where, config.dtype, config.seed, say=say, attn_implementation=config.attn_implementation
    )
    context = prepared.context
    weights = weights_sha256(context.loaded.model)  # as loaded: steering under check may change the model in place
    findings: list[FindingResult] = []
    seconds: dict[str, float] = {}
    prepare_s = time.perf_counter() - preparing
    names = config.findings

    def done(index: int, finding: FindingResult, elapsed: float) -> None:
        seconds[finding.id] = elapsed
        findings.append(finding)
        if on_finding is not None:
            on_finding(finding, elapsed)
        say(f"[{index}/{len(names)}] {finding.id}: {finding.verdict} ({elapsed:.1f} s)")

    with context.work.shared():  # a generation several findings need is made once (see model_work)
        costs: list[CheckCost] = []  # check mode: where the check's model work went
        notes, prompt_ids, resolved, spec_s = _run_mode(config, context, names, done, say, steering, costs.append)
    machine_load = watch.finish()
    timings = RunTimings(
        load_s=context.loaded.load_seconds,
        prepare_s=prepare_s,
        findings_s=sum(seconds.values()),
        model_work_s=context.work.seconds,
        model_calls=context.work.calls,
        shared_calls=context.work.shared_calls,
        spec_s=spec_s,
    )
    return RunReport(
        config=config,
        model_source=context.loaded.source,
        adapter=context.loaded.adapter,
        prompt_ids=prompt_ids,
        prompt_tokens=tuple(context.loaded.tokenizer.convert_ids_to_tokens(list(prompt_ids))),
        architecture=context.architecture,
        determinism=prepared.determinism,
        environment=environment_info(prepared.device),
        load_seconds=context.loaded.load_seconds,
        weights_sha256=weights,
        findings=tuple(findings),
        finding_seconds=seconds,
        spec=resolved,
        checked="" if steering is None else steering.describe(),
        check_cost=costs[0] if costs else None,
        timings=timings,
        notes=notes,
        machine_load=machine_load,
    )


class _BusyWatch:
    """Passes progress lines on and, at the first one at least :attr:`WINDOW_S` into the run (a shorter window
    is too noisy to judge), says once if the machine is busy; :meth:`finish` judges the whole run. With no
    monitor it only passes the lines on."""

    WINDOW_S = 3.0

    def __init__(self, monitor: LoadMonitor | None, progress: Progress) -> None:
        self.monitor, self.progress, self.warned = monitor, progress, False

    def say(self, message: str) -> None:
        self.progress(message)
        if self.monitor is not None and not self.warned:
            load = self.monitor.stop()
            if load.seconds >= self.WINDOW_S:
                self._warn(load)

    def _warn(self, load: MachineLoad) -> None:
        warning = load.run_warning()
        if warning is not None:
            self.warned = True
            self.progress(warning)

    def finish(self) -> MachineLoad | None:
        if self.monitor is None:
            return None
        load = self.monitor.stop()
        if not self.warned:
            self._warn(load)
        return load


def _run_mode(
    config: RunConfig,
    context: SteeringContext,
    names: tuple[str, ...],
    done: Callable[[int, FindingResult, float], None],
    say: Progress,
    steering: UserSteering | None = None,
    cost: Callable[[CheckCost], None] = lambda _cost: None,
) -> tuple[tuple[str, ...], tuple[int, ...], ResolvedSpec | None, float | None]:
    """Run the findings of the run's mode; returns the notes, the prompt ids shown, the resolved spec and (spec
    mode) the seconds of the spec findings' loop."""
    resolved: ResolvedSpec | None = None
    spec_s: float | None = None
    if config.spec is None:
        prompt_ids = tuple(int(token) for token in context.encode(config.prompt)[0].tolist())
        configs = experiment_configs(config, context)
        notes = _study_notes(context, config)
        for index, name in enumerate(names, start=1):
            say(f"[{index}/{len(names)}] {name} ...")
            started = time.perf_counter()
            finding = _run_one(name, context, configs[name])
            done(index, finding, time.perf_counter() - started)
    else:
        batch = encode_prompts(
            context.loaded.tokenizer,
            config.prompt_list,
            context.device,
            config.padding,
            config.add_special_tokens,
            config.chat_template,
            config.prefix,
        )
        check_fits_context(max(batch.lengths), config.max_new_tokens, context.architecture.max_positions)
        if config.decoding.stop_at_eos and not context.eos_token_ids():
            raise UserInputError("--stop-at-eos: this model has no EOS token id, so generation cannot stop early")
        notes = _batch_notes(context, batch)
        resolved = resolve_spec(config.spec, context, batch, config.max_new_tokens, config.decoding)
        prompt_ids = batch.row_ids(0)
        started = time.perf_counter()
        if steering is not None:
            say(f"checking {steering.describe()} against the intent: {config.spec.describe()}")
            judged = _user_findings(config, context, resolved, steering, say, cost)
        else:
            say(f"steering: {config.spec.describe()}; generating every arm once")
            judged = _spec_findings(config, context, resolved, say)
        for index, (finding, elapsed) in enumerate(judged, start=1):
            done(index, finding, elapsed)
        spec_s = time.perf_counter() - started
    return notes, prompt_ids, resolved, spec_s


__all__ = ["RunReport", "experiment_configs", "run_findings"]
