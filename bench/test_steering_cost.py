"""pytest-benchmark suite: the cost of each arm per new-token count, each checked against the raw hook first.

Same arms as ``equiv bench`` (``equiv_core.bench.arms``); here each (arm, new_tokens) is its own benchmark, so
pytest-benchmark's JSON, comparison and histogram tools apply. The interleaved, ratio-reporting sweep is
``equiv bench``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import BenchSetup

from equiv_core.arms.steering import GenerationRecord
from equiv_core.bench.arms import ARMS
from equiv_core.findings.comparison import tensor_sha256
from equiv_core.models.determinism import configure_determinism

pytestmark = pytest.mark.integration  # loads smollm2-135m (gpt2-small-random on CUDA)


def test_arm_cost(benchmark: Any, bench_setup: BenchSetup, arm: str, new_tokens: int) -> None:
    """Correctness (deterministic kernels) first, then timing (default kernels) of one (arm, new_tokens) cell."""
    setup = bench_setup
    run = ARMS.get(arm).run
    # floor is compiled once, with the kernels it is timed with (Dynamo recompiles when the flag flips).
    configure_determinism(0, deterministic=ARMS.get(arm).deterministic_check)
    record = run(setup.context, setup.input_ids, new_tokens, setup.layer)
    hook = setup.reference("hook", new_tokens)
    unsteered = setup.reference("unsteered", new_tokens)
    assert len(record.generated_ids) == new_tokens
    if ARMS.get(arm).steered:
        assert record.generated_ids != unsteered.generated_ids, f"{arm}: steering not applied"
        assert record.generated_ids == hook.generated_ids, f"{arm}: ids differ from the raw hook"

    benchmark.extra_info.update(
        {
            "arm": arm,
            "new_tokens": new_tokens,
            "prompt_tokens": int(setup.input_ids.shape[1]),
            "layer": setup.layer,
            "model": setup.context.loaded.name,
            "dtype": str(setup.context.dtype),
            "device": str(setup.context.device),
            "ids_match_hook": record.generated_ids == hook.generated_ids,
            "logits_sha256": tensor_sha256(record.step_logits),
        }
    )
    device = setup.context.device

    def call() -> GenerationRecord:
        result = run(setup.context, setup.input_ids, new_tokens, setup.layer)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return result

    configure_determinism(0, deterministic=False)
    try:
        benchmark.pedantic(call, rounds=setup.rounds, warmup_rounds=1, iterations=1)
    finally:
        configure_determinism(0, deterministic=True)
