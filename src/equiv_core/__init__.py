"""equiv_core: does steering do what its author thinks, what does it cost, and does it still on the next release.

Packages, each named after its job and importing only the ones below it (README "Layout"; ``.importlinter``):
cli | testing > jobs > audit > tracking > bench > findings > usercode > observe > arms > models > config > spec >
support. Every ``__init__.py`` holds only its docstring (this one also the version and the lazy name below):
importing a package pulls in nothing. The entry points for library use are :func:`check_steering` (your own
steering code, in a notebook or a script: :mod:`equiv_core.jobs.check`),
:func:`equiv_core.findings.runner.run_findings` (with :func:`equiv_core.config.run.validate_config`),
:func:`equiv_core.bench.sweep.run_bench` and :func:`equiv_core.arms.prepare.prepare_run`.
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["CheckResult", "check_steering"]


def __getattr__(name: str) -> Any:
    """``equiv_core.check_steering`` and ``equiv_core.CheckResult``, imported when first asked for (importing
    ``equiv_core`` stays free of torch)."""
    if name in __all__:
        from equiv_core.jobs import check

        return getattr(check, name)
    raise AttributeError(f"module 'equiv_core' has no attribute {name!r}")
