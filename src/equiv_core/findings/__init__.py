"""The findings and what judges them (their ids are in ``config/catalog.py``, for the torch-free command line):
the original study's five (``study/``), the spec findings and the spec run they share (``spec/``), their common
types (``finding.py``, ``verdict.py``), comparisons with named tolerances (``comparison.py``), the coverage map
(``coverage_map.py``, ``coverage_plot.py``), the runner of a whole run (``runner.py``) and its text report
(``report.py``).

May import: ``arms``, ``models``, ``config``, ``spec``, ``support``. The coverage oracle re-derives the KV-cache
position arithmetic on purpose: an oracle does not share code with what it checks.
"""
