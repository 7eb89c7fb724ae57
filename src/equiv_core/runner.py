"""Run the registered findings on one model: validate input, set determinism, load, run, collect evidence.

This is the only place that calls the determinism, provenance and model-loading modules, so experiments stay
plain functions and every entry point (CLI, benchmarks, tests) gets the same checks and the same provenance.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from equiv_core.compat import NNSIGHT_VERSION, NotExpressible
from equiv_core.context import SteeringContext, build_context
from equiv_core.determinism import DeterminismReport, configure_determinism
from equiv_core.errors import UserInputError
from equiv_core.experiments import EXPERIMENTS, ExperimentConfig, FindingResult
from equiv_core.experiments.base import DEFAULT_MAX_NEW_TOKENS, DEFAULT_PROMPT
from equiv_core.models import (
    DEFAULT_MODEL,
    load_model,
    resolve_device,
    resolve_dtype,
    weights_sha256,
)
from equiv_core.provenance import environment_info

Progress = Callable[[str], None]
FindingDone = Callable[[FindingResult, float], None]


@dataclass(frozen=True, slots=True)
class RunConfig:
    """What ``equiv run`` runs: one model, one prompt, the chosen findings."""

    model: str = DEFAULT_MODEL
    device: str = "auto"
    dtype: str = "float32"
    prompt: str = DEFAULT_PROMPT
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    layer: int | None = None  # layer of findings 2-5 (default 0); finding 1 always uses the last layer
    position: int = -1
    seed: int = 0
    experiments: tuple[str, ...] = field(default_factory=lambda: EXPERIMENTS.names())

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class RunReport:
    """Everything one run produced, ready to print or to write as JSON."""

    config: RunConfig
    model_source: str
    prompt_ids: tuple[int, ...]
    prompt_tokens: tuple[str, ...]
    architecture: dict[str, Any]
    determinism: DeterminismReport
    environment: dict[str, Any]
    load_seconds: float
    weights_sha256: str
    findings: tuple[FindingResult, ...]
    finding_seconds: dict[str, float]

    @property
    def all_hold(self) -> bool:
        return all(finding.holds for finding in self.findings)

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
        return {
            "model": self.config.model,
            "model_source": self.model_source,
            "prompt": self.config.prompt,
            "prompt_ids": list(self.prompt_ids),
            "prompt_tokens": list(self.prompt_tokens),
            "config": self.config.to_dict(),
            "architecture": self.architecture,
            "determinism": self.determinism.to_dict(),
            "environment": self.environment,
            "load_seconds": self.load_seconds,
            "weights_sha256": self.weights_sha256,
            "all_hold": self.all_hold,
            "fingerprint": self.fingerprint(),
            "findings": [
                {**finding.to_dict(), "seconds": self.finding_seconds[finding.id]} for finding in self.findings
            ],
        }


def validate_config(config: RunConfig) -> None:
    """Reject what can be rejected before loading a model (cheap checks first, one clear message each)."""
    if not config.prompt.strip():
        raise UserInputError("prompt is empty; give a prompt of at least 2 tokens")
    if config.max_new_tokens < 1:
        raise UserInputError(f"max-new-tokens must be >= 1, got {config.max_new_tokens}")
    for name in config.experiments:
        EXPERIMENTS.get(name)
    resolve_dtype(config.dtype)
    resolve_device(config.device)


def _resolve_index(kind: str, value: int, size: int) -> int:
    """A Python-style index in [-size, size-1] turned absolute, or a one-line error naming the range."""
    if not -size <= value < size:
        raise UserInputError(f"{kind} {value} out of range; valid: 0..{size - 1} (or {-size}..-1)")
    return value % size


def experiment_configs(config: RunConfig, context: SteeringContext) -> dict[str, ExperimentConfig]:
    """Per-experiment configs for this model, after the checks that need the model (layer, position, length)."""
    prompt_length = context.encode(config.prompt).shape[1]
    if prompt_length < 2:
        raise UserInputError(f"prompt {config.prompt!r} is {prompt_length} token; need at least 2 tokens")
    num_layers = context.architecture.num_layers
    layer = _resolve_index("layer", 0 if config.layer is None else config.layer, num_layers)
    _resolve_index("position", config.position, prompt_length)
    limit = context.architecture.max_positions
    if limit is not None and prompt_length + config.max_new_tokens > limit:
        raise UserInputError(
            f"max-new-tokens {config.max_new_tokens} too large: valid 1..{limit - prompt_length} "
            f"for a {prompt_length}-token prompt on this model ({limit} positions)"
        )
    base = ExperimentConfig(config.prompt, config.max_new_tokens, layer, config.position)
    return {
        name: replace(base, layer=num_layers - 1) if EXPERIMENTS.get(name).uses_last_layer else base
        for name in config.experiments
    }


def _run_one(name: str, context: SteeringContext, config: ExperimentConfig) -> FindingResult:
    """Run one experiment; an unexpected exception is a failed finding with its cause, not a crashed run."""
    experiment = EXPERIMENTS.get(name)
    try:
        return experiment.run(context, config)
    except UserInputError:
        raise
    except NotExpressible as reason:
        message = f"not expressible on nnsight {NNSIGHT_VERSION}: {reason}"
        return FindingResult(name, experiment.title, False, message, {"not_expressible": str(reason)}, config, False)
    except Exception as error:  # noqa: BLE001 - reported as the finding's failure, with the traceback tail
        where = traceback.extract_tb(error.__traceback__)[-1]
        message = f"raised {type(error).__name__}: {error} (at {where.filename}:{where.lineno})"
        return FindingResult(name, experiment.title, False, message, {"exception": message}, config)


def run_findings(
    config: RunConfig, progress: Progress | None = None, on_finding: FindingDone | None = None
) -> RunReport:
    """Validate, make the run deterministic, load the model and run each chosen finding in registry order.

    ``on_finding`` is called as each finding completes (e.g. to log it at once, so it survives a later crash).
    """
    say = progress or (lambda _message: None)
    validate_config(config)
    determinism = configure_determinism(config.seed)
    device = resolve_device(config.device)
    say(f"loading {config.model} on {device} ({config.dtype})")
    loaded = load_model(config.model, device, config.dtype)
    context = build_context(loaded)
    configs = experiment_configs(config, context)
    say(
        f"loaded in {loaded.load_seconds:.1f} s: {context.architecture.num_layers} layers, "
        f"block output is a {context.architecture.block_output_form}, nnsight {context.nnsight.version}"
    )
    findings: list[FindingResult] = []
    seconds: dict[str, float] = {}
    for index, name in enumerate(config.experiments, start=1):
        say(f"[{index}/{len(config.experiments)}] {name} ...")
        started = time.perf_counter()
        finding = _run_one(name, context, configs[name])
        seconds[name] = time.perf_counter() - started
        findings.append(finding)
        if on_finding is not None:
            on_finding(finding, seconds[name])
        say(f"[{index}/{len(config.experiments)}] {name}: {finding.verdict} ({seconds[name]:.1f} s)")
    prompt_ids = tuple(int(token) for token in context.encode(config.prompt)[0].tolist())

    return RunReport(
        config=config,
        model_source=loaded.source,
        prompt_ids=prompt_ids,
        prompt_tokens=tuple(loaded.tokenizer.convert_ids_to_tokens(list(prompt_ids))),
        architecture=context.architecture.to_dict(),
        determinism=determinism,
        environment=environment_info(device),
        load_seconds=loaded.load_seconds,
        weights_sha256=weights_sha256(loaded.model),
        findings=tuple(findings),
        finding_seconds=seconds,
    )


__all__ = ["RunConfig", "RunReport", "experiment_configs", "run_findings", "validate_config"]
