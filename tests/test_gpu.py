"""The gpu tier: the CUDA code paths (device placement, synchronized timing, deterministic cuBLAS, GPU provenance).

Runs on ``--device`` (default ``cuda:0`` where CUDA exists) and is skipped, saying so, on machines without CUDA.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from equiv_core.arms.context import build_context
from equiv_core.bench.arms import ARMS
from equiv_core.bench.sweep import run_bench
from equiv_core.config.bench import BenchConfig
from equiv_core.config.run import RunConfig
from equiv_core.findings.runner import run_findings
from equiv_core.models.determinism import configure_determinism
from equiv_core.models.load import load_model
from equiv_core.models.provenance import environment_info

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama"])
def test_all_findings_hold_on_cuda(device: torch.device, model: str) -> None:
    report = run_findings(RunConfig(model=model, device=str(device)))
    assert {finding.id: finding.message for finding in report.findings if not finding.holds} == {}
    assert report.environment.device == str(device)


def test_every_steered_arm_matches_the_hook_on_cuda(device: torch.device) -> None:
    configure_determinism(0)
    context = build_context(load_model("tiny-llama", device))
    assert context.device.type == "cuda"
    input_ids = context.encode("The weather today is")
    hook = ARMS.get("hook").run(context, input_ids, 6, 0)
    unsteered = ARMS.get("unsteered").run(context, input_ids, 6, 0)
    for arm in ("plain", "iter0", "recompute"):
        record = ARMS.get(arm).run(context, input_ids, 6, 0)
        assert record.generated_ids == hook.generated_ids, arm
        assert record.generated_ids != unsteered.generated_ids, arm


def test_bench_times_cuda_arms_and_names_the_gpu(device: torch.device) -> None:
    config = BenchConfig(model="tiny-gpt2", device=str(device), new_tokens=(2, 4), rounds=2, max_rounds=2, warmup=1)
    report = run_bench(config, progress=False)
    assert report.all_correct
    assert report.environment.gpu_name == torch.cuda.get_device_name(device)
    assert all(cell.stats.median_s > 0 for cell in report.results)
    assert report.memory_method == "cuda-max-allocated"
    assert all(cell.peak_bytes > 0 for cell in report.results)  # every generation allocates on the GPU


def test_floor_compiles_with_cuda_graphs_and_matches_the_hook(device: torch.device) -> None:
    config = BenchConfig(
        model="tiny-gpt2", device=str(device), arms=("floor", "hook", "unsteered"), new_tokens=(4, 8), max_rounds=6
    )
    report = run_bench(config, progress=False)
    assert report.not_expressible == {}
    floor = [cell for cell in report.results if cell.arm == "floor"]
    assert floor and all(cell.ids_match_hook and cell.steering_applied for cell in floor)
    assert report.compile_seconds is not None and report.compile_seconds > 0


def test_cuda_peak_memory_counts_what_the_call_allocates(device: torch.device) -> None:
    from equiv_core.bench.timer import measure

    _, measured = measure(lambda: torch.empty(2**20, dtype=torch.uint8, device=device), device)
    assert measured.peak_bytes >= 2**20


def test_provenance_records_gpu_name_and_memory(device: torch.device) -> None:
    info = environment_info(device)
    assert info.gpu_name == torch.cuda.get_device_name(device)
    assert info.gpu_memory_gib is not None and info.gpu_memory_gib > 0 and info.cuda == torch.version.cuda


def test_determinism_sets_cublas_workspace_before_cuda_starts(device: torch.device) -> None:
    """In a fresh process: configure first, then CUDA; cuBLAS must see the fixed workspace."""
    code = (
        "import json, os, torch\n"
        "from equiv_core.models.determinism import configure_determinism\n"
        "report = configure_determinism(0)\n"
        f"torch.ones(2, 2, device='{device}') @ torch.ones(2, 2, device='{device}')\n"
        "print(json.dumps({'before': report.cuda_initialized_before, 'cublas': os.environ['CUBLAS_WORKSPACE_CONFIG'],"
        " 'deterministic': torch.are_deterministic_algorithms_enabled()}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {
        "before": False,
        "cublas": ":4096:8",
        "deterministic": True,
    }
