"""Readable text report of a run, in the spirit of the original study: tokens decoded, each finding with
PASS/FAIL and the evidence that decided it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from equiv_core.runner import RunReport

Lines = list[str]


def _ids(ids: list[int]) -> str:
    return "[" + ", ".join(str(token) for token in ids) + "]"


def _position_sweep(evidence: dict[str, Any]) -> Lines:
    lines = [f"unsteered           -> {evidence['unsteered_text']!r}"]
    for entry in evidence["positions"]:
        mark = "CHANGED" if entry["changed"] else "same"
        lines.append(f"zero position {entry['position']:<3} {entry['token']!r:<12} -> {entry['text']!r}  {mark}")
    return lines


def _kv_cache(evidence: dict[str, Any]) -> Lines:
    logits = evidence["logits_vs_generation"]
    return [
        f"generation (iter[0], position {evidence['position']}) {_ids(evidence['generation']['generated_ids'])} "
        f"{evidence['generation']['text']!r}",
        f"full forward pass predicts   {_ids(evidence['full_pass_predicted_ids'])}; without the edit it predicts "
        f"{_ids(evidence['full_pass_without_edit_predicted_ids'])}",
        f"logits vs generation: bit-identical {logits['bit_identical']}, max abs diff {logits['max_abs_diff']:.3g} "
        f"(tolerance atol={logits['atol']}, rtol={logits['rtol']})",
    ]


def _iter0(evidence: dict[str, Any]) -> Lines:
    return [
        f"plain invoke (position {evidence['plain_position']}) {_ids(evidence['plain_ids'])} "
        f"{evidence['plain']['text']!r}",
        f"iter[0]      (position {evidence['iter0_position']}) {_ids(evidence['iter0_ids'])} "
        f"{evidence['iter0']['text']!r}",
        f"raw hook                  {_ids(evidence['reference_ids'])}; unsteered {_ids(evidence['unsteered_ids'])}",
        f"logits bit-identical (plain vs iter0): {evidence['logits_bit_identical']}",
    ]


def _iter_all(evidence: dict[str, Any]) -> Lines:
    return [
        f"shapes per step with cache:    {evidence['shapes_per_step']}",
        f"index {evidence['position']} failed at steps {evidence['failed_steps']}: {evidence['first_error']}",
        f"shapes per step without cache: {evidence['recompute_shapes_per_step']} (no error)",
    ]


def _steered(evidence: dict[str, Any]) -> Lines:
    return [
        f"steered   {_ids(evidence['steered_ids'])} {evidence['steered']['text']!r}",
        f"unsteered {_ids(evidence['unsteered_ids'])} {evidence['unsteered']['text']!r}",
        f"raw hook  {_ids(evidence['reference_ids'])}",
    ]


_DETAILS: dict[str, Callable[[dict[str, Any]], Lines]] = {
    "position_sweep": _position_sweep,
    "kv_cache_persistence": _kv_cache,
    "iter0_equivalence": _iter0,
    "iter_all_out_of_bounds": _iter_all,
    "steered_differs": _steered,
}


def render(report: RunReport) -> str:
    """The report as printed by ``equiv run``."""
    environment = report.environment
    architecture = report.architecture
    lines = [
        "equiv-bench: steering-equivalence findings",
        f"model    {report.config.model}: {architecture['num_layers']} layers at {architecture['layers_path']}, "
        f"hidden {architecture['hidden_size']}, block output is a {architecture['block_output_form']}",
        f"         {report.model_source}",
        f"prompt   {report.config.prompt!r} -> {len(report.prompt_ids)} tokens {list(report.prompt_tokens)}",
        f"decoding greedy, {report.config.max_new_tokens} new tokens; edit: zero the hidden state; "
        f"seed {report.determinism.seed}, deterministic kernels {report.determinism.deterministic_algorithms}",
        f"versions nnsight {environment['nnsight_version']}, transformers {environment['transformers_version']}, "
        f"torch {environment['torch_version']} on {environment['device']} ({report.config.dtype})",
        "",
    ]
    for index, finding in enumerate(report.findings, start=1):
        lines.append(f"[{finding.verdict}] {index}. {finding.id} (layer {finding.config.layer}): {finding.title}")
        details = _DETAILS.get(finding.id)
        if details is not None and "exception" not in finding.evidence and finding.evidence:
            lines += [f"       {line}" for line in details(finding.evidence)]
        lines.append(f"       => {finding.message}")
        lines.append("")
    held = sum(finding.holds for finding in report.findings)
    lines.append(
        f"{held}/{len(report.findings)} findings hold. Run fingerprint (ids + logits hashes): "
        f"{report.fingerprint()[:16]}"
    )
    return "\n".join(lines)
