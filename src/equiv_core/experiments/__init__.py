"""The five findings as registered experiments; importing this package registers all of them, in order."""
# ruff: noqa: I001  (import order is registration order, which is the order findings are reported in)

from equiv_core.experiments import position_sweep  # noqa: F401
from equiv_core.experiments import kv_cache_persistence  # noqa: F401
from equiv_core.experiments import iter0_equivalence  # noqa: F401
from equiv_core.experiments import iter_all_out_of_bounds  # noqa: F401
from equiv_core.experiments import steered_differs  # noqa: F401
from equiv_core.experiments.base import EXPERIMENTS, Experiment, ExperimentConfig, FindingResult

__all__ = ["EXPERIMENTS", "Experiment", "ExperimentConfig", "FindingResult"]
