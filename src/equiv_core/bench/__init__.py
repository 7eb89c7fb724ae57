"""Timing the ways of steering against the raw hook, the compiled floor and unsteered generation, with correctness
beside speed: the arms it times (``arms.py``), one measured call (``timer.py``), statistics, the timing budget
(``budget.py``), interleaved rounds within it (``timing.py``), the typed results (``results.py``), the whole run
(``sweep.py``), its table (``table.py``), plot and pytest-benchmark JSON.

May import: ``findings`` (the comparisons), ``arms``, ``models``, ``config``, ``spec``, ``support``.
"""
