"""pytest-benchmark suite configuration: which model and sweep, and the machine info every JSON carries.

Run for numbers:    pytest bench --benchmark-json=results/pytest-benchmark.json
Run in CI:          pytest bench --benchmark-disable   (each cell once: does every arm work and agree with hook)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import torch

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.prepare import prepare_run
from equiv_core.arms.steering import GenerationRecord
from equiv_core.bench.arms import ARMS
from equiv_core.config.bench import CPU_NEW_TOKENS, GPU_DEFAULT_MODEL, GPU_NEW_TOKENS
from equiv_core.config.catalog import DEFAULT_PROMPT
from equiv_core.models.determinism import configure_determinism
from equiv_core.models.load import DEFAULT_MODEL, resolve_device
from equiv_core.models.provenance import environment_info


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("equiv-bench")
    group.addoption("--bench-model", default=None, help="model (default: smollm2-135m, gpt2-small-random on CUDA)")
    group.addoption("--bench-device", default="auto", help="auto, cpu or cuda")
    group.addoption("--bench-dtype", default="float32", help="float32, bfloat16 or float16")
    group.addoption("--bench-new-tokens", default=None, help="comma-separated new-token sweep")
    group.addoption("--bench-rounds", type=int, default=10, help="timed rounds per benchmark")
    group.addoption("--bench-layer", type=int, default=0, help="decoder layer edited")


def _new_tokens(config: pytest.Config) -> tuple[int, ...]:
    value = config.getoption("--bench-new-tokens")
    if value:
        return tuple(int(part) for part in value.split(","))
    cuda = resolve_device(config.getoption("--bench-device")).type == "cuda"
    return GPU_NEW_TOKENS if cuda else CPU_NEW_TOKENS


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "new_tokens" in metafunc.fixturenames:
        metafunc.parametrize("new_tokens", _new_tokens(metafunc.config))
    if "arm" in metafunc.fixturenames:
        metafunc.parametrize("arm", ARMS.names())


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict[str, Any]) -> None:
    """Versions, GPU and determinism flags in pytest-benchmark's JSON, so numbers can be compared honestly."""
    device = resolve_device(config.getoption("--bench-device"))
    machine_info["equiv"] = {
        **environment_info(device).to_dict(),
        "dtype": config.getoption("--bench-dtype"),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "timing_mode": "default kernels (correctness checked first with deterministic kernels)",
    }


@dataclass(frozen=True, slots=True, eq=False)
class BenchSetup:
    """The loaded model, prompt and per-size references shared by every benchmark of the session."""

    context: SteeringContext
    input_ids: torch.Tensor
    layer: int
    rounds: int
    references: dict[tuple[str, int], GenerationRecord]

    def reference(self, arm: str, new_tokens: int) -> GenerationRecord:
        """The hook or unsteered generation for ``new_tokens``, computed once in deterministic mode."""
        key = (arm, new_tokens)
        if key not in self.references:
            configure_determinism(0, deterministic=True)
            self.references[key] = ARMS.get(arm).run(self.context, self.input_ids, new_tokens, self.layer)
        return self.references[key]


@pytest.fixture(scope="session")
def bench_setup(pytestconfig: pytest.Config) -> BenchSetup:
    device = resolve_device(pytestconfig.getoption("--bench-device"))
    model = pytestconfig.getoption("--bench-model") or (GPU_DEFAULT_MODEL if device.type == "cuda" else DEFAULT_MODEL)
    context = prepare_run(model, str(device), pytestconfig.getoption("--bench-dtype")).context
    return BenchSetup(
        context,
        context.encode(DEFAULT_PROMPT),
        pytestconfig.getoption("--bench-layer"),
        pytestconfig.getoption("--bench-rounds"),
        {},
    )
