"""Plain-text tables for the terminal: left-aligned columns two spaces apart."""

from __future__ import annotations


def text_table(rows: list[list[str]]) -> list[str]:
    """``rows`` (the first is the header) as aligned lines, trailing spaces removed."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
