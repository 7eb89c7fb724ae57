"""Timing the ways of steering against a raw-hook floor and unsteered generation, with correctness beside speed."""
