"""equiv_core: does steering do what its author thinks, what does it cost, and does it still on the next release.

Packages, each named after its job and importing only the ones below it (README "Layout"; ``.importlinter``):
cli > jobs > audit > tracking > bench > findings > arms > models > config > spec > support. Every ``__init__.py``
holds only its docstring (this one also the version): importing a package pulls in nothing. The entry points
for library use are :func:`equiv_core.findings.runner.run_findings` (with
:func:`equiv_core.config.run.validate_config`), :func:`equiv_core.bench.sweep.run_bench` and
:func:`equiv_core.arms.prepare.prepare_run`.
"""

__version__ = "0.1.0"
