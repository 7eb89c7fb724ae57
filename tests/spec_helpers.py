"""A steering spec run on a loaded tiny model, and its spec findings' verdicts: what the spec-arm and
generation-settings tests share."""

from __future__ import annotations

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.resolution import resolve_spec
from equiv_core.arms.resolved import ResolvedSpec
from equiv_core.config.decoding import GREEDY, Decoding
from equiv_core.config.run import Padding
from equiv_core.findings.spec.registered import SPEC_FINDINGS
from equiv_core.findings.spec.spec_finding import SpecFindingConfig
from equiv_core.findings.spec.spec_run import SpecRun, run_spec
from equiv_core.models.inputs import encode_prompts
from equiv_core.spec.steering_spec import spec_from_options

PROMPT, NEW_TOKENS = "The weather today is", 6


def resolved_spec(
    context: SteeringContext,
    prompts: tuple[str, ...] = (PROMPT,),
    padding: Padding | None = None,
    decoding: Decoding = GREEDY,
    new_tokens: int = NEW_TOKENS,
    prefix: str = "",
    **options: str,
) -> ResolvedSpec:
    """The spec the ``options`` describe (as ``--op``, ``--positions``, ... would), resolved for ``prompts`` (after a
    cached ``prefix``, where given)."""
    batch = encode_prompts(context.loaded.tokenizer, prompts, context.device, padding, prefix=prefix)
    return resolve_spec(spec_from_options(None, **options), context, batch, new_tokens, decoding)


def spec_run(context: SteeringContext, **how: object) -> SpecRun:
    """Every arm of that spec, generated once (``how``: :func:`resolved_spec`'s arguments)."""
    return run_spec(context, resolved_spec(context, **how))  # type: ignore[arg-type]


def spec_verdicts(run: SpecRun) -> dict[str, tuple[str, str]]:
    """Each spec finding's verdict and message on ``run`` (batch_invariance only for batches, site only for a site
    other than the block output, as in ``equiv run``)."""
    config = SpecFindingConfig(run.resolved.batch.prompts, run.resolved.new_tokens, run.resolved.spec)
    left_out = {"batch_invariance"} if run.batch_size == 1 else set()
    left_out |= {"site"} if run.resolved.spec.site.is_default else set()
    names = [name for name in SPEC_FINDINGS if name not in left_out]
    results = {name: SPEC_FINDINGS.get(name).judge(run, config) for name in names}
    return {name: (result.verdict, result.message) for name, result in results.items()}
