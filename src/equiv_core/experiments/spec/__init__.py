"""The spec findings; importing this package registers them, in report order."""
# ruff: noqa: I001  (import order is registration order)

from equiv_core.experiments.spec import coverage  # noqa: F401
from equiv_core.experiments.spec import arms_agree  # noqa: F401
from equiv_core.experiments.spec import cache_vs_recompute  # noqa: F401
from equiv_core.experiments.spec import steered_differs  # noqa: F401
from equiv_core.experiments.spec import batch_invariance  # noqa: F401
from equiv_core.experiments.spec.base import SPEC_FINDINGS, SpecFinding, SpecFindingConfig

__all__ = ["SPEC_FINDINGS", "SpecFinding", "SpecFindingConfig"]
