"""The coverage map as a picture: one step x position heatmap per arm (columns) and steered layer (rows, per batch
row), intended against touched."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from equiv_core.findings.coverage_map import CoverageCheck, computed_positions

if TYPE_CHECKING:  # matplotlib is imported only when a picture is drawn
    from matplotlib.figure import Figure

# Cell categories, drawn in this order of precedence.
CATEGORIES = (
    ("not computed in this pass", "#ffffff"),
    ("computed, left alone", "#e6e6e6"),
    ("touched, as intended", "#2e8b57"),
    ("intended, NOT touched", "#ff8c00"),
    ("touched, NOT intended", "#d62728"),
    ("index out of range", "#7b2cbf"),
)


def steered_layers(check: CoverageCheck) -> tuple[int, ...]:
    """The layers an arm's check concerns: intended, touched, faulted or with a recorded pass, ascending."""
    layers = {touch.layer for touch in check.intended | check.touched}
    layers |= {fault.layer for fault in check.faults} | {shape.layer for shape in check.passes}
    return tuple(sorted(layers))


def layer_matches(check: CoverageCheck, layer: int) -> bool:
    """The check's verdict on one layer: nothing missed, unintended, faulted or of unexpected length there."""
    layers = {touch.layer for touch in check.missed | check.unintended}
    layers |= {fault.layer for fault in check.faults} | {shape.layer for shape in check.unexpected_passes}
    return layer not in layers


def coverage_matrix(check: CoverageCheck, prompt_length: int, new_tokens: int, layer: int | None = None) -> np.ndarray:
    """[steps, positions] category codes (indices into :data:`CATEGORIES`) of ``layer``'s touches (None: every
    layer's, a missed edit on any of them showing as missed); one more column, last, only where an index was out
    of range (or on a pad token) at some step, to mark those steps (such an index has no position to draw it at)."""
    last = prompt_length + new_tokens - 2
    faults = [fault for fault in check.faults if layer is None or fault.layer == layer]
    matrix = np.zeros((new_tokens, last + (2 if faults else 1)), dtype=np.int8)
    for step in range(new_tokens):
        matrix[step, list(computed_positions(step, prompt_length, check.cached, check.prefix_length))] = 1
    for code, touches in ((2, check.intended & check.touched), (4, check.unintended), (3, check.missed)):
        for touch in touches:
            if layer is None or touch.layer == layer:
                matrix[touch.step, touch.position] = code
    for fault in faults:
        matrix[fault.step, last + 1] = 5
    return matrix


def plot_coverage(
    checks: dict[str, tuple[CoverageCheck, ...]], descriptions: dict[str, str], new_tokens: int, title: str, path: Path
) -> Path:
    """Draw :func:`coverage_figure` to ``path`` (PNG) and return it."""
    figure = coverage_figure(checks, descriptions, new_tokens, title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def coverage_figure(
    checks: dict[str, tuple[CoverageCheck, ...]], descriptions: dict[str, str], new_tokens: int, title: str
) -> Figure:
    """One heatmap per arm (columns) and per batch row and steered layer (rows): with ``--layers 2,5`` each layer
    has its own panel, titled with its own verdict, so one sees which layer an arm touched."""
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    colormap = ListedColormap([color for _label, color in CATEGORIES])
    every_check = [check for row_checks in checks.values() for check in row_checks]
    layers = sorted({layer for check in every_check for layer in steered_layers(check)}) or [0]
    batch_rows = sorted({check.row for check in every_check})
    panels = [(row, layer) for row in batch_rows for layer in layers]
    figure = Figure(figsize=(4.2 * len(checks), (0.32 * new_tokens + 1.8) * len(panels) + 0.8), dpi=110)
    grid = figure.subplots(len(panels), len(checks), squeeze=False)
    for column, (arm, row_checks) in enumerate(checks.items()):
        for check in row_checks:
            for layer in layers:
                axes = grid[panels.index((check.row, layer))][column]
                _draw_panel(axes, check, layer, new_tokens, colormap)
                verdict = "OK" if layer_matches(check, layer) else "GAP"
                row = f" row {check.row}" if len(batch_rows) > 1 else ""
                described = textwrap.fill(descriptions.get(arm, ""), width=58)  # a panel is ~4 inches wide
                axes.set_title(f"{arm}{row}, layer {layer} [{verdict}]\n{described}", fontsize=8)
    # One legend row fits 3 panels or more; fewer (equiv check draws 2) take two rows.
    figure.legend(
        handles=[Patch(facecolor=color, edgecolor="grey", label=label) for label, color in CATEGORIES],
        loc="lower center",
        ncol=len(CATEGORIES) if len(checks) >= 3 else (len(CATEGORIES) + 1) // 2,
        fontsize=7,
        frameon=False,
    )
    figure.suptitle(title, fontsize=9)
    figure.tight_layout(rect=(0, 0.08 / len(panels), 1, 0.95))
    return figure


def _draw_panel(axes: Any, check: CoverageCheck, layer: int, new_tokens: int, colormap: Any) -> None:
    """One step x position heatmap of ``check`` at ``layer``; the ``!`` column only where an index faulted."""
    matrix = coverage_matrix(check, check.prompt_length, new_tokens, layer)
    positions = check.prompt_length + new_tokens - 1
    axes.imshow(matrix, cmap=colormap, vmin=0, vmax=len(CATEGORIES) - 1, aspect="auto", interpolation="nearest")
    axes.axvline(check.prompt_length - 0.5, color="black", linewidth=1)
    faulted = matrix.shape[1] > positions
    axes.set_xticks(range(matrix.shape[1]), [str(p) for p in range(positions)] + (["!"] if faulted else []))
    axes.set_yticks(range(new_tokens))
    axes.tick_params(labelsize=7)
    note = "; ! = index out of range" if faulted else ""
    axes.set_xlabel(f"position (| = end of prompt{note})", fontsize=8)
    axes.set_ylabel("generation step", fontsize=8)
