"""The compiled ``floor`` arm on tiny-gpt2: the same ids as the raw hook, compile time apart from the timings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from equiv_core.arms.floor import cache_length
from equiv_core.cli.main import main

pytestmark = pytest.mark.integration  # torch.compile: about 10-30 s of compiling on 2 cores


def test_floor_generates_the_hooks_ids_and_reports_its_compile_time_apart(tmp_path: Path) -> None:
    target = tmp_path / "bench.json"
    argv = ["bench", "--model", "tiny-gpt2", "--arms", "floor,hook,unsteered", "--new-tokens", "2,4"]
    options = ["--rounds", "2", "--max-rounds", "2", "--no-progress", "--no-plot", "--no-mlflow", "--json", str(target)]
    assert main([*argv, *options]) == 0
    payload = json.loads(target.read_text())
    floor = [record for record in payload["records"] if record["arm"] == "floor"]
    assert [record["new_tokens"] for record in floor] == [1, 2, 4]
    assert all(record["ids_match_hook"] and record["steering_applied"] for record in floor)
    assert payload["floor_compile_seconds"] > 0
    # Compiling happened before the timed rounds: none of them is as slow as the compiling calls together.
    assert max(max(record["wall_s"]) for record in floor) < payload["floor_compile_seconds"]


def test_one_static_cache_length_serves_a_whole_cpu_sweep() -> None:
    """Prompt 5 + up to 32 new tokens fit in 64 positions: one compiled decode graph for every size."""
    assert {cache_length(5, size) for size in (1, 8, 16, 32)} == {64}
    assert cache_length(5, 128) == 256
