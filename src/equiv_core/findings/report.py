"""Readable text report of a run, in the spirit of the original study: tokens decoded, each finding with
PASS/FAIL and the evidence that decided it."""

from __future__ import annotations

from equiv_core.arms.resolved import ResolvedSpec
from equiv_core.findings.coverage_map import ranges
from equiv_core.findings.runner import RunReport


def render(report: RunReport) -> str:
    """The report as printed by ``equiv run``."""
    versions = report.environment.versions
    architecture = report.architecture
    title = (
        "equiv-bench: steering-equivalence findings"
        if report.spec is None
        else f"equiv-bench: checking {report.checked}"
        if report.checked
        else "equiv-bench: steering spec findings"
    )
    lines = [
        title,
        f"model    {report.config.model}: {architecture.num_layers} layers at {architecture.layers_path}, "
        f"hidden {architecture.hidden_size}, block output is a {architecture.block_output_form}",
        f"         {report.model_source}",
        *_prompt(report),
        f"decoding {_decoding(report)}, {report.config.max_new_tokens} new tokens; "
        + ("edit: zero the hidden state; " if report.spec is None else "")
        + f"seed {report.determinism.seed}, deterministic kernels {report.determinism.deterministic_algorithms}",
        *_steering(report),
        f"versions nnsight {versions.version('nnsight')}, transformers {versions.version('transformers')}, "
        f"torch {versions.version('torch')} on {report.environment.device} ({report.config.dtype})",
        "",
    ]
    for index, finding in enumerate(report.findings, start=1):
        lines.append(f"[{finding.verdict}] {index}. {finding.id} ({finding.config.where()}): {finding.title}")
        lines += [f"       {line}" for line in finding.evidence.lines()]
        lines.append(f"       => {finding.message}")
        lines.append("")
    counted = [finding for finding in report.findings if finding.counts]
    held = sum(finding.holds for finding in counted)
    skipped = len(report.findings) - len(counted)
    lines.append(
        f"{held}/{len(counted)} findings hold"
        + (f" ({skipped} not applicable to this input)" if skipped else "")
        + f". Run fingerprint (ids + logits hashes): {report.fingerprint()[:16]}"
    )
    if report.check_cost is not None:
        lines.append(report.check_cost.render())
    return "\n".join(lines)


def _steering(report: RunReport) -> list[str]:
    if report.spec is None:
        return []
    resolved = report.spec
    lines = [f"{'intent  ' if report.checked else 'steering'} {resolved.spec.describe()}"]
    if resolved.batch.size == 1:
        where = f"positions {ranges(resolved.positions[0])}"
    else:
        where = "positions per row " + "; ".join(
            f"{row}: {ranges(positions)}" for row, positions in enumerate(resolved.positions)
        )
    lines.append(f"         resolved: layers {ranges(resolved.layers)}, {where}, steps {resolved.steps.describe()}")
    return lines + _norms(resolved) + list(report.notes)


def _norms(resolved: ResolvedSpec) -> list[str]:
    """The residual norm at each steered layer, and what the op's scale comes to against it (add: the added
    vector's norm; clamp: the value the component is set to)."""
    if not resolved.site_norms:
        return []
    norms = resolved.site_norms
    at_residual = resolved.spec.site.at_residual
    what_norm = "residual norm" if at_residual else f"norm at {resolved.spec.site.describe()}"
    lines = [
        f"         {what_norm} (mean over {'the prefix and ' if resolved.batch.prefix_length else ''}the prompt's "
        "tokens but the first): "
        + ", ".join(f"layer {layer} {norm:.4g}" for layer, norm in zip(resolved.layers, norms, strict=True))
    ]
    steering = resolved.steering_norms()
    if steering is not None:
        what, values = "added |scale v|", steering
    elif resolved.op == "clamp":
        what, values = "component set to", tuple(resolved.scale_for(layer) for layer in resolved.layers)
    else:
        return lines
    lines.append(
        f"         {what}: "
        + ", ".join(
            f"layer {layer} {value:.4g} = {value / norm:.3g}x the norm" if norm else f"layer {layer} {value:.4g}"
            for layer, value, norm in zip(resolved.layers, values, norms, strict=True)
        )
    )
    return lines


def _prompt(report: RunReport) -> list[str]:
    if report.spec is not None and report.spec.batch.prefix_length:
        batch, prefix = report.spec.batch, report.spec.batch.prefix_length
        return [
            f"prefix   {report.config.prefix!r} -> {prefix} tokens (positions 0-{prefix - 1}), prefilled once, "
            "unsteered; its KV cache is handed to generate",
            f"prompt   {batch.prompts[0]!r} -> {batch.lengths[0] - prefix} tokens (positions {prefix}-"
            f"{batch.lengths[0] - 1})",
        ]
    if report.spec is None or report.spec.batch.size == 1:
        tokens = f"{len(report.prompt_ids)} tokens" + (
            f" {list(report.prompt_tokens)}" if len(report.prompt_ids) <= 16 else ""
        )
        prompt = report.config.prompt if report.spec is None else report.spec.batch.prompts[0]
        return [f"prompt   {prompt!r} -> {tokens}"]
    batch = report.spec.batch
    return [f"prompt {row:<2}{prompt!r} -> {batch.lengths[row]} tokens" for row, prompt in enumerate(batch.prompts)]


def _decoding(report: RunReport) -> str:
    return "greedy" if report.spec is None else report.spec.decoding.describe()
