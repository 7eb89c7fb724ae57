"""``check_steering``: ``equiv check`` for notebooks, scripts and test suites: hand over the steering function itself.

    from equiv_core import check_steering
    result = check_steering(steer, intent="actadd-all", model="tiny-llama")
    result            # in Jupyter: the verdicts and the step x position grid of what the code touched
    assert result.holds, result

The same findings, evidence and fingerprint as ``equiv check FILE.py:NAME``; nothing is logged to MLflow (use the
command for that).
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from equiv_core.config.catalog import DEFAULT_MAX_NEW_TOKENS, DEFAULT_MODEL, DEFAULT_PROMPT, ArmName
from equiv_core.config.check import Form
from equiv_core.config.decoding import GREEDY, Decoding
from equiv_core.usercode.checked import IntentLike

if TYPE_CHECKING:
    from equiv_core.findings.finding import FindingResult
    from equiv_core.findings.runner import RunReport
    from equiv_core.findings.user.coverage import UserCoverageEvidence

_VERDICT_COLOURS = {"PASS": "#2e8b57", "FAIL": "#d62728"}


@dataclass(frozen=True, slots=True, eq=False, repr=False)
class CheckResult:
    """What one check found: ``holds`` (every finding that applies holds), the findings, and the report.

    Printed, it is ``equiv check``'s report; in Jupyter it shows as a table of verdicts with the grid of what the
    user's code touched (``#`` as intended, ``o`` missed, ``x`` not intended).
    """

    report: RunReport

    @property
    def holds(self) -> bool:
        return self.report.all_hold

    @property
    def findings(self) -> tuple[FindingResult, ...]:
        return self.report.findings

    def finding(self, id: str) -> FindingResult:
        """The finding ``id`` (KeyError naming the ones run)."""
        for finding in self.findings:
            if finding.id == id:
                return finding
        raise KeyError(f"no finding {id!r}; this check ran {', '.join(f.id for f in self.findings)}")

    def touched(self, row: int = 0) -> list[list[int]]:
        """What the user's code was observed to touch in batch row ``row``: ``[step, layer, position, row]``."""
        return [touch.to_list() for touch in sorted(self._coverage().checks[ArmName.USER][row].touched)]

    def grid(self, row: int = 0) -> str:
        """The step x position grid of the user's observed touches in row ``row``."""
        return "\n".join(self._coverage().grid(ArmName.USER, row))

    def _coverage(self) -> UserCoverageEvidence:
        from equiv_core.findings.user.coverage import UserCoverageEvidence

        evidence = self.finding("coverage").evidence
        if not isinstance(evidence, UserCoverageEvidence):
            raise KeyError(f"the coverage finding has no evidence: {self.finding('coverage').message}")
        return evidence

    def to_dict(self) -> dict[str, Any]:
        return self.report.to_dict()

    def __repr__(self) -> str:
        verdicts = ", ".join(f"{finding.id}: {finding.verdict}" for finding in self.findings)
        return f"CheckResult({self.report.checked} on {self.report.config.model}: {verdicts})"

    def __str__(self) -> str:
        from equiv_core.findings.report import render

        return render(self.report)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython's plain-text display
        printer.text(str(self))

    def _repr_html_(self) -> str:  # Jupyter's rich display
        rows = "".join(
            f"<tr><td style='color:{_VERDICT_COLOURS.get(str(f.verdict), '#555')};font-weight:bold'>{f.verdict}</td>"
            f"<td>{html.escape(f.id)}</td><td>{html.escape(f.message)}</td></tr>"
            for f in self.findings
        )
        head = html.escape(f"{self.report.checked} on {self.report.config.model}")
        grid = html.escape(self.grid()) if any(f.id == "coverage" for f in self.findings) else ""
        return (
            f"<div><b>equiv check</b>: {head}<table>{rows}</table>"
            + (f"<pre>{grid}\n\n# as intended, o missed, x not intended</pre>" if grid else "")
            + "</div>"
        )


def check_steering(
    steer: Callable[..., Any],
    intent: IntentLike,
    model: str = DEFAULT_MODEL,
    prompts: tuple[str, ...] | list[str] = (DEFAULT_PROMPT,),
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    form: Form | str | None = None,
    device: str = "auto",
    dtype: str = "float32",
    seed: int = 0,
    padding: str | None = None,
    decoding: Decoding = GREEDY,
    progress: Callable[[str], None] | None = None,
    attn_implementation: str | None = None,
) -> CheckResult:
    """Check ``steer`` (hooks form ``steer(model[, tokenizer]) -> context manager``, or generate form
    ``steer(model, tokenizer, input_ids, attention_mask, max_new_tokens, generation_kwargs) -> ids``) against
    ``intent`` (a recipe name such as ``"actadd-all"``, a SteeringSpec, or spec options as on the command line:
    ``{"op": "add", "vector": "actadd:A|B", "layers": "1", "positions": "all"}``) on ``model`` (a built-in name, a
    directory or a hub id; ``attn_implementation``: ``eager`` or ``sdpa``, None the model's own), generating
    ``max_new_tokens`` tokens for ``prompts`` (several: one padded batch).

    Raises UserInputError for a bad argument or a steering function of no known form (UserCodeError), and
    UserCodeRaised when ``steer`` raises while generating (with the step and the lines of its traceback).
    """
    from equiv_core.findings.runner import run_findings
    from equiv_core.usercode.checked import checked_config

    config, steering = checked_config(
        steer,
        intent,
        model=model,
        prompts=tuple(prompts),
        max_new_tokens=max_new_tokens,
        form=form,
        device=device,
        dtype=dtype,
        seed=seed,
        padding=padding,
        decoding=decoding,
        attn_implementation=attn_implementation,
    )
    return CheckResult(run_findings(config, progress=progress, steering=steering))
