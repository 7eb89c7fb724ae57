"""Steering specs as written: op, vector, scale, layers, positions, steps; the recipe catalogue; vector file headers."""
