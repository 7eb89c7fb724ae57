"""The benchmark as a readable text table: arm, new tokens, median, IQR, ratios, correctness."""

from __future__ import annotations

from equiv_core.bench.sweep import BenchReport


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _yes_no(value: bool | None) -> str:
    return "-" if value is None else ("yes" if value else "NO")


def render_table(report: BenchReport) -> str:
    """One row per (new_tokens, arm), then growth exponents and the prefill/decode split."""
    header = (
        f"{'arm':<10} {'new':>4} {'median':>10} {'IQR':>9} {'95% CI of median':>21} {'/hook':>7} "
        f"{'/unsteered':>10} {'ids=hook':>8} {'max|dlogit|':>11}  status"
    )
    lines = [header, "-" * len(header)]
    for result in sorted(report.results, key=lambda r: (r.new_tokens, report.config.arms.index(r.arm))):
        stats = result.stats
        diff = "-" if result.logits_vs_hook is None else f"{result.logits_vs_hook.max_abs_diff:.2g}"
        status = result.status + (" (noisy)" if stats.noisy else "")
        lines.append(
            f"{result.arm:<10} {result.new_tokens:>4} {stats.median_s:>9.4f}s {stats.iqr_s:>8.4f}s "
            f"[{stats.ci95_low_s:>8.4f}, {stats.ci95_high_s:>8.4f}] {_ratio(result.ratio_to_hook):>7} "
            f"{_ratio(result.ratio_to_unsteered):>10} {_yes_no(result.ids_match_hook):>8} {diff:>11}  {status}"
        )
    exponents = report.growth_exponents()
    lines.append("")
    lines.append(
        "growth exponent (log-log slope of median vs new tokens; ~1 linear, ~2 quadratic): "
        + ", ".join(f"{arm} {value:.2f}" if value is not None else f"{arm} -" for arm, value in exponents.items())
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
    lines.append(
        f"n = {report.config.rounds} timed rounds after {report.config.warmup} warm-up, arms interleaved; "
        "timings use default kernels, correctness columns come from a deterministic pass"
    )
    return "\n".join(lines)
