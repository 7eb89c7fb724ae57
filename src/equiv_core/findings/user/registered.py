"""The user findings, registered in report order: import :data:`USER_FINDINGS` from here to get all of them."""
# ruff: noqa: I001  (import order is registration order, which is the order findings are reported in)

from equiv_core.findings.user import coverage  # noqa: F401
from equiv_core.findings.user import matches_reference  # noqa: F401
from equiv_core.findings.user import steered_differs  # noqa: F401
from equiv_core.findings.user import hooks_removed  # noqa: F401
from equiv_core.findings.user.user_finding import USER_FINDINGS

__all__ = ["USER_FINDINGS"]
