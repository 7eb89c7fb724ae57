"""Reproducibility audits: the findings re-run across nnsight / transformers / torch versions, one environment
per cell (``nox -s audit``), and a report that makes behaviour changes between releases visible."""
