"""equiv_core: deterministic experiments on how three ways of nnsight steering relate.

The public entry points are :func:`equiv_core.models.load_model`, the experiment registry in
:mod:`equiv_core.experiments` and :func:`equiv_core.runner.run_findings`.
"""

__version__ = "0.1.0"
