"""The coverage map as a picture: one step x position heatmap per arm, intended against touched."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from equiv_core.coverage import CoverageCheck, computed_positions

# Cell categories, drawn in this order of precedence (a missed edit on any layer shows as missed).
CATEGORIES = (
    ("not computed in this pass", "#ffffff"),
    ("computed, left alone", "#e6e6e6"),
    ("touched, as intended", "#2e8b57"),
    ("intended, NOT touched", "#ff8c00"),
    ("touched, NOT intended", "#d62728"),
    ("index out of range", "#7b2cbf"),
)


def coverage_matrix(check: CoverageCheck, prompt_length: int, new_tokens: int) -> np.ndarray:
    """[steps, positions + 1] category codes (indices into :data:`CATEGORIES`); the extra last column marks the
    steps at which an index was out of range (such an index has no position to draw it at)."""
    last = prompt_length + new_tokens - 2
    matrix = np.zeros((new_tokens, last + 2), dtype=np.int8)
    for step in range(new_tokens):
        matrix[step, list(computed_positions(step, prompt_length, check.cached))] = 1
    for code, touches in ((2, check.intended & check.touched), (4, check.unintended), (3, check.missed)):
        for touch in touches:
            matrix[touch.step, touch.position] = code
    for fault in check.faults:
        matrix[fault.step, last + 1] = 5
    return matrix


def plot_coverage(
    checks: dict[str, tuple[CoverageCheck, ...]], descriptions: dict[str, str], new_tokens: int, title: str, path: Path
) -> Path:
    """Draw one heatmap per arm (columns) and batch row (rows) to ``path`` (PNG) and return it."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    colormap = ListedColormap([color for _label, color in CATEGORIES])
    n_rows = max(len(row_checks) for row_checks in checks.values())
    figure = Figure(figsize=(4.2 * len(checks), (0.32 * new_tokens + 1.8) * n_rows + 0.8), dpi=110)
    grid = figure.subplots(n_rows, len(checks), squeeze=False)
    for column, (arm, row_checks) in enumerate(checks.items()):
        for check in row_checks:
            axes = grid[check.row][column]
            matrix = coverage_matrix(check, check.prompt_length, new_tokens)
            axes.imshow(matrix, cmap=colormap, vmin=0, vmax=len(CATEGORIES) - 1, aspect="auto", interpolation="nearest")
            axes.axvline(check.prompt_length - 0.5, color="black", linewidth=1)
            axes.set_xticks(range(matrix.shape[1]), [str(p) for p in range(matrix.shape[1] - 1)] + ["!"])
            axes.set_yticks(range(new_tokens))
            axes.tick_params(labelsize=7)
            axes.set_xlabel("position (| = end of prompt; ! = index out of range)", fontsize=8)
            axes.set_ylabel("generation step", fontsize=8)
            verdict = "OK" if check.matches else "GAP"
            row = f" row {check.row}" if n_rows > 1 else ""
            axes.set_title(f"{arm}{row} [{verdict}]\n{descriptions.get(arm, '')}", fontsize=8, wrap=True)
    figure.legend(
        handles=[Patch(facecolor=color, edgecolor="grey", label=label) for label, color in CATEGORIES],
        loc="lower center",
        ncol=len(CATEGORIES),
        fontsize=7,
        frameon=False,
    )
    figure.suptitle(title, fontsize=9)
    figure.tight_layout(rect=(0, 0.08 / n_rows, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
