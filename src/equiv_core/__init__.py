"""equiv_core: deterministic experiments on how three ways of nnsight steering relate.

The public entry points are :func:`equiv_core.models.load.load_model`, the experiment registry in
:mod:`equiv_core.findings.study` and :func:`equiv_core.findings.runner.run_findings`.
"""

__version__ = "0.1.0"
