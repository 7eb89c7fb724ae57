"""The five findings, registered in report order: import :data:`EXPERIMENTS` from here to get all of them."""
# ruff: noqa: I001  (import order is registration order, which is the order findings are reported in)

from equiv_core.findings.study import position_sweep  # noqa: F401
from equiv_core.findings.study import kv_cache_persistence  # noqa: F401
from equiv_core.findings.study import iter0_equivalence  # noqa: F401
from equiv_core.findings.study import iter_all_out_of_bounds  # noqa: F401
from equiv_core.findings.study import steered_differs  # noqa: F401
from equiv_core.findings.finding import EXPERIMENTS

__all__ = ["EXPERIMENTS"]
