"""Spec finding ``batch_invariance``: each row of a batch gives the token ids its prompt gives when run alone, in
every arm.

Padding must not change what a prompt generates: real attention masks hide the pad tokens, and positions are per
row. Token ids must match exactly; logits are reported (batched kernels may round differently). A row whose
*unsteered* generation already differs from running alone cannot be judged for steering: with right padding
``generate`` continues every row from the last column, a pad token for shorter rows (transformers warns about
it), so such rows are reported and left out. Rows that need no padding are judged too (batching alone can change a
row). One prompt, sampling, or no row that can be judged: NOT APPLICABLE, never when a judged row shows a problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from equiv_core.arms.steering import GenerationRecord
from equiv_core.config.catalog import ArmName
from equiv_core.findings.finding import FindingResult
from equiv_core.findings.spec.spec_finding import (
    SpecEvidence,
    SpecFindingConfig,
    arms_evidence,
    spec_finding,
    spec_verdict,
)
from equiv_core.findings.spec.spec_run import SpecRun

ID = "batch_invariance"


@dataclass(frozen=True, slots=True)
class RowInvariance:
    arm: str
    row: int
    batched_ids: tuple[int, ...]
    alone_ids: tuple[int, ...]
    logits_max_abs_diff: float | None  # None where the two ran different numbers of steps

    @property
    def ids_equal(self) -> bool:
        return self.batched_ids == self.alone_ids

    def to_dict(self) -> dict[str, Any]:
        return {
            "arm": self.arm,
            "row": self.row,
            "ids_equal": self.ids_equal,
            "batched_ids": list(self.batched_ids),
            "alone_ids": list(self.alone_ids),
            "logits_max_abs_diff": self.logits_max_abs_diff,
        }


@dataclass(frozen=True, slots=True)
class BatchInvarianceEvidence(SpecEvidence):
    padding: str
    comparisons: tuple[RowInvariance, ...]
    comparable_rows: tuple[int, ...]  # rows whose unsteered generation is batch-invariant
    pitfall: str

    def details(self) -> dict[str, Any]:
        return {
            "padding": self.padding,
            "comparable_rows": list(self.comparable_rows),
            "comparisons": [comparison.to_dict() for comparison in self.comparisons],
            "pitfall": self.pitfall,
        }

    def lines(self) -> list[str]:
        lines = []
        for c in self.comparisons:
            same = "= alone" if c.ids_equal else f"!= alone {list(c.alone_ids)}"
            diff = "-" if c.logits_max_abs_diff is None else f"{c.logits_max_abs_diff:.3g}"
            skip = "" if c.row in self.comparable_rows else " (not judged: unsteered already differs)"
            lines.append(f"row {c.row} {c.arm:<20} {list(c.batched_ids)} {same}; max |dlogit| {diff}{skip}")
        if self.pitfall:
            lines.append(f"pitfall: {self.pitfall}")
        return lines


def _logits_diff(first: GenerationRecord, second: GenerationRecord) -> float | None:
    if first.step_logits.shape != second.step_logits.shape:
        return None
    return float((first.step_logits - second.step_logits).abs().max())


def _pitfall(run: SpecRun) -> str:
    batch = run.resolved.batch
    padded = batch.padded_rows()
    if batch.padding != "right" or not padded:
        return ""
    return (
        f"with right padding the last column ({batch.padded_length - 1}) is a pad token for rows "
        f"{', '.join(map(str, padded))}: a literal h[:, -1] in a batched invoke edits padding there, and generate "
        "continues those rows from it; pad on the left to generate"
    )


@spec_finding(ID, "each prompt of a batch gives the same token ids as when it runs alone, in every arm")
def batch_invariance(run: SpecRun, config: SpecFindingConfig) -> FindingResult:
    prompts = run.resolved.batch.prompts
    if run.batch_size == 1:
        evidence = BatchInvarianceEvidence(arms_evidence(run), prompts, "none", (), (), "")
        return spec_verdict(ID, config, [], "", evidence, applicable="one prompt: nothing is batched (use --prompts)")
    comparisons: list[RowInvariance] = []
    comparable: dict[bool, list[int]] = {True: [], False: []}  # per cache mode: rows unsteered keeps alone
    for row, alone in enumerate(run.alone):
        for cached, batched, solo in (
            (True, run.unsteered[row], alone.unsteered[0]),
            (False, run.unsteered_recompute[row], alone.unsteered_recompute[0]),
        ):
            baseline = RowInvariance(
                ArmName.UNSTEERED if cached else ArmName.UNSTEERED_RECOMPUTE,
                row,
                batched.generated_ids,
                solo.generated_ids,
                _logits_diff(batched, solo),
            )
            comparisons.append(baseline)
            if baseline.ids_equal:
                comparable[cached].append(row)
        for name, arm in run.arms.items():
            alone_arm = alone.arms[ArmName.ITER if name == ArmName.ITER_PER_INVOKE else name]
            if not arm.expressible or not alone_arm.expressible:
                continue
            batched, solo = arm.rows[row], alone_arm.rows[0]
            comparisons.append(
                RowInvariance(name, row, batched.generated_ids, solo.generated_ids, _logits_diff(batched, solo))
            )
    cache_mode = {name: arm.cached for name, arm in run.arms.items()} | {
        ArmName.UNSTEERED: True,
        ArmName.UNSTEERED_RECOMPUTE: False,
    }
    problems = [
        f"{c.arm}: row {c.row} gives {list(c.batched_ids)} in the batch but {list(c.alone_ids)} alone"
        for c in comparisons
        if c.row in comparable[cache_mode[c.arm]] and not c.ids_equal
    ]
    pitfall = _pitfall(run)
    judged = sorted(set(comparable[True]) & set(comparable[False]))
    evidence = BatchInvarianceEvidence(
        arms_evidence(run), prompts, run.resolved.batch.padding, tuple(comparisons), tuple(judged), pitfall
    )
    padded = run.resolved.batch.padded_rows()
    not_applicable = ""
    if run.resolved.decoding.do_sample:
        not_applicable = (
            "sampling draws one set of random numbers for the whole batch, so a row's sample depends on the batch: "
            "run batch invariance greedy"
        )
    elif not problems and not judged:
        not_applicable = (
            "no row's unsteered generation is the same as running alone with and without the KV cache, so no row "
            "can be judged"
        )
        not_applicable += f"; {pitfall}" if pitfall else ""
    left_out = [row for row in range(run.batch_size) if row not in judged]
    success = f"every arm gives each prompt's ids alone, in rows {', '.join(map(str, judged))}"
    if left_out:
        success += f" (rows {', '.join(map(str, left_out))} not judged: unsteered generation already differs there)"
    if not any(row in padded for row in judged):
        success += "; no judged row was padded: this tested batching, not padding"
    success += f"; {pitfall}" if pitfall and left_out else ""
    return spec_verdict(ID, config, problems, success, evidence, applicable=not_applicable)
