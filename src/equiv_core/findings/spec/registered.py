"""The spec findings, registered in report order: import :data:`SPEC_FINDINGS` from here to get all of them."""
# ruff: noqa: I001  (import order is registration order, which is the order findings are reported in)

from equiv_core.findings.spec import site  # noqa: F401
from equiv_core.findings.spec import coverage  # noqa: F401
from equiv_core.findings.spec import arms_agree  # noqa: F401
from equiv_core.findings.spec import cache_vs_recompute  # noqa: F401
from equiv_core.findings.spec import steered_differs  # noqa: F401
from equiv_core.findings.spec import batch_invariance  # noqa: F401
from equiv_core.findings.spec.spec_finding import SPEC_FINDINGS

__all__ = ["SPEC_FINDINGS"]
