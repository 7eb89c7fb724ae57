"""Spec finding ``site``: the tensor each steered layer's site reaches on this model is the one the spec names.

What a site is, is probed on the loaded model (:func:`equiv_core.models.sites.resolve_sites`), not assumed from
names. It fails where the tensor is not what its name says:

- ``attention-output`` / ``mlp-output`` that carry the block's input through (residual-added, as BLOOM's attention
  and MLP modules are: transformers ``modeling_bloom``; nnterp PR #55): the tensor is the residual stream after the
  sub-layer, so zeroing, setting, clamping or ablating it edits the whole residual stream, not the sub-layer's
  contribution;
- a sub-layer output the probe could not judge (not as wide as the block's input; a shifted pass that overflowed);
- a block input that is not the previous block's output bit for bit;
- heads on a tensor in the residual stream's basis (an attention module's output): inference-time intervention
  steers head *h* at the input of the attention output projection, where head *h*'s output is columns ``h*d ..
  (h+1)*d``; after the projection those columns are not head *h* (honest_llama#42, Li et al. 2023,
  arXiv:2306.03341). Heads on a module site are taken as the user's layout and not judged.

It appears in a run only for a site other than the block output (whose tensor is the residual stream by
definition).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from equiv_core.findings.coverage_map import ranges
from equiv_core.findings.finding import FindingResult
from equiv_core.findings.spec.spec_finding import (
    SpecEvidence,
    SpecFindingConfig,
    arms_evidence,
    spec_finding,
    spec_verdict,
)
from equiv_core.findings.spec.spec_run import SpecRun
from equiv_core.models.sites import CARRY_LIMIT, SiteModule

ID = "site"


@dataclass(frozen=True, slots=True)
class SiteEvidence(SpecEvidence):
    sites: tuple[SiteModule, ...]
    meanings: tuple[str, ...]  # per site, what it is on this model

    def details(self) -> dict[str, Any]:
        return {"sites": [site.to_dict() for site in self.sites], "meanings": list(self.meanings)}

    def lines(self) -> list[str]:
        return [f"layer {site.layer}: {meaning}" for site, meaning in zip(self.sites, self.meanings, strict=True)]


def meaning(site: SiteModule) -> str:
    """What ``site`` is on the loaded model, in one line, from its probes."""
    where = f"{site.full_path}'s {'input' if site.reads_input else 'output'} [batch, seq, {site.width}]"
    kind = site.site.kind
    heads = (
        f"; heads {','.join(map(str, site.heads))} = columns {ranges(site.columns)} ({site.head_dim} per head)"
        if site.columns
        else ""
    )
    if kind == "block-input":
        if site.layer == 0:
            return f"{where}: the embeddings as block 0 receives them"
        same = "is" if site.equals_previous_output else "is NOT"
        return f"{where}: the residual stream entering the block; {same} block {site.layer - 1}'s output bit for bit"
    if kind == "head-input":
        return f"{where}: the attention heads' outputs side by side, before the output projection{heads}"
    if site.carry_ratio is None:
        return f"{where}{heads}"
    carried = (
        f"shifting the block's input by delta moved it by delta (|change - delta| / |delta| = {site.carry_ratio:.2g})"
    )
    if site.residual_added:
        return f"{where}: residual-added, the residual stream after the sub-layer ({carried}){heads}"
    return f"{where}: the sub-layer's own contribution (|change - delta| / |delta| = {site.carry_ratio:.2g}){heads}"


def problems_of(site: SiteModule) -> list[str]:
    """Why ``site`` is not the tensor the spec names (none where it is)."""
    kind, problems = site.site.kind, []
    if kind == "block-input" and site.equals_previous_output is False:
        problems.append(
            f"layer {site.layer}: block {site.layer}'s input is not block {site.layer - 1}'s output bit for bit "
            "(something runs between them), so it is not the residual stream the previous block left"
        )
    if kind in ("attention-output", "mlp-output") and site.carry_ratio is None:
        problems.append(
            f"layer {site.layer}: {kind} could not be probed ({site.full_path}'s output is not as wide as the "
            "block's input, or the shifted pass was not finite), so whether it adds the residual is not known"
        )
    if kind in ("attention-output", "mlp-output") and site.residual_added:
        problems.append(
            f"layer {site.layer}: {kind} is residual-added on this model: {site.full_path}'s output carries the "
            f"block's input through (a shift delta of the input moved it by delta, |change - delta| / |delta| = "
            f"{site.carry_ratio:.2g} < {CARRY_LIMIT}), so it is the residual stream after the sub-layer, not its "
            "contribution; steer the module that computes the contribution (--site module:PATH) or the block output"
        )
    if kind == "attention-output" and site.heads:
        problems.append(
            f"layer {site.layer}: heads {','.join(map(str, site.heads))} sliced from the attention module's output, "
            "which is after the output projection, in the residual stream's basis: its columns are not heads "
            "(honest_llama#42); per-head steering is --site head-input, the projection's input"
        )
    return problems


@spec_finding(ID, "each steered layer's site is the tensor the spec names on this model")
def site(run: SpecRun, config: SpecFindingConfig) -> FindingResult:
    sites = run.resolved.sites
    meanings = tuple(meaning(entry) for entry in sites)
    problems = [problem for entry in sites for problem in problems_of(entry)]
    evidence = SiteEvidence(arms_evidence(run), run.resolved.batch.prompts, sites, meanings)
    kind = run.resolved.spec.site.describe()
    success = f"{kind} is what it says at every steered layer: {meanings[0]}" if meanings else f"{kind}: no site"
    return spec_verdict(ID, config, problems, success, evidence)
