"""The benchmark as a readable text table: arm, new tokens, median and its CI, CPU time, memory, ratios,
correctness; then growth exponents, the prefill/decode split and how busy the machine was."""

from __future__ import annotations

from equiv_core.bench.results import ArmResult, BenchReport
from equiv_core.bench.statistics import MEDIAN_CI_CONFIDENCE, TimingStats, ci_label
from equiv_core.support.tables import text_table


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _paired(result: ArmResult) -> str:
    """``1.02x [1.00, 1.04] 96.8%``: the median per-round ratio to the hook with its CI and the CI's real level."""
    paired = result.paired_to_hook
    if paired is None:
        return "1.00x" if result.arm == "hook" else "-"
    return f"{paired.median:.2f}x [{paired.ci95_low:.2f}, {paired.ci95_high:.2f}] {ci_label(paired.n)}"


def _ci(stats: TimingStats) -> str:
    """``+-1.52% 96.8%``: the CI's wider side from the median, then its real level for n rounds (``range 75%``
    where n is too small for a 95% CI). Two decimals: 1.99% (met) and 2.02% (missed) must differ."""
    return f"+-{stats.ci_half_width:.2%} {ci_label(stats.n)}"


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "NO")


def render_table(report: BenchReport) -> str:
    """One row per (new_tokens, arm), then growth exponents, the prefill/decode split and the machine's load."""
    headers = [
        "arm",
        "new",
        "median s",
        "CI of median, level",
        "n",
        "CPU s",
        "peak growth MiB",
        "/hook (paired, CI, level)",
        "/unsteered",
        "ids=hook",
        "max|dlogit|",
        "status",
    ]
    rows = []
    for result in sorted(report.results, key=lambda r: (r.new_tokens, report.config.arms.index(r.arm))):
        stats = result.stats
        diff = "-" if result.logits_vs_hook is None else f"{result.logits_vs_hook.max_abs_diff:.2g}"
        status: str
        if result.precise:
            status = str(result.status)
        elif stats.ci_level < MEDIAN_CI_CONFIDENCE:
            status = f"{result.status}; too few rounds for a 95% CI"
        else:
            status = f"{result.status}; CI wider than target"
        rows.append(
            [
                result.arm,
                str(result.new_tokens),
                f"{stats.median_s:.4f}",
                _ci(stats),
                str(stats.n),
                f"{result.cpu_stats.median_s:.4f}",
                f"{result.peak_bytes / 2**20:.1f}",
                _paired(result),
                _ratio(result.ratio_to_unsteered),
                _yes_no(result.ids_match_hook),
                diff,
                status,
            ]
        )
    lines = [*text_table([headers, *rows]), ""]
    lines.append(
        "growth exponent (log-log slope of median vs new tokens, 95% bootstrap CI; ~1 linear, ~2 quadratic): "
        + "; ".join(f"{arm} {value.describe()}" for arm, value in report.growth_exponents().items())
    )
    split = report.prefill_split()
    if split:
        lines.append(
            "prefill (1-token runs) / decode per token: "
            + ", ".join(
                f"{arm} {cell['prefill_s'] * 1e3:.1f} ms / {cell['decode_per_token_s'] * 1e3:.1f} ms"
                for arm, cell in split.items()
            )
        )
    for arm, reason in report.not_expressible.items():
        lines.append(f"{arm}: not expressible here, not timed: {reason}")
    if report.compile_seconds is not None:
        lines.append(
            f"floor: {report.compile_seconds:.1f} s compiling (torch.compile, static KV cache), before and apart from "
            "its timings"
        )
    config, load = report.config, report.load
    precise = sum(result.precise for result in report.results)
    lines.append(
        f"{precise}/{len(report.results)} cells within the +-{config.target:.0%} target "
        f"(at least {config.rounds} rounds after {config.warmup} warm-up, at most {config.max_rounds}, arms "
        f"interleaved; {report.timing_seconds:.0f} s of timing against a {config.budget_s:.0f} s budget)"
    )
    given_up = [plan.describe() for plan in report.plans if not plan.fits]
    lines.extend(given_up[-1:])  # the last plan that gave something up says what the budget cost
    lines.extend(report.budget_notes)
    lines.extend(f"{size} new tokens: not timed ({reason})" for size, reason in report.not_timed.items())
    lines.append(
        "CI of median: the distribution-free order-statistic interval (SciPy's quantile_test), labelled with its "
        "real level for n rounds: 95% or more from 6 rounds; with fewer it is the [min, max] range, whose level "
        "is 1 - 2^(1-n) (75% at 3)"
    )
    lines.append(
        f"machine: {report.environment.compute.torch_threads} torch threads on {load.cores} cores; load average "
        f"{load.loadavg_start[0]:.2f} -> {load.loadavg_end[0]:.2f}; other processes used {load.others_cores:.1f} "
        f"cores while timing; CPU s is this process's CPU time per run (all threads)"
    )
    lines.append(
        f"peak growth MiB: the most one round's call added at its peak over the resident size just before it "
        f"({report.memory_method}); 0.0 means the call fit in memory already held (what earlier rounds freed is "
        "kept by the allocator and reused), not that it needs none"
    )
    if load.busy:  # the one-line warning itself went to stderr as timing ended
        lines.append("machine busy: medians and ratios are not reliable (see the warning above)")
    lines.append(
        "/hook is the median of per-round ratios to the hook (rounds interleaved, so a slow spell of the machine "
        "cancels); /unsteered is the ratio of medians; timings use default kernels; correctness columns come from "
        "a deterministic pass"
    )
    return "\n".join(lines)
