"""Reproducibility audits: the findings re-run across nnsight / transformers / torch releases, one environment per
cell (``nox -s audit``), release bisection, and a report that makes behaviour changes between releases visible.
``matrix.py`` and ``record.py`` are standard library only (``noxfile.py`` imports them); ``probes.py`` holds the
audit's probes of nnsight itself (known-bad patterns), kept out of the production arms.

May import: ``tracking``, ``bench``, ``findings``, ``arms``, ``models``, ``config``, ``spec``, ``support``.
"""
