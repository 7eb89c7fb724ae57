"""``equiv bench`` end to end on a tiny model: records, plot, correctness flags, and bad arguments."""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from equiv_core.bench import arms
from equiv_core.cli.main import main
from equiv_core.support.registry import Registry

EAGER_ARMS = tuple(name for name in arms.ARMS.names() if name != "floor")  # floor compiles: its own tests
REQUIRED = {
    "arm",
    "new_tokens",
    "median_s",
    "iqr_s",
    "n",
    "ratio_to_hook",
    "ids_match_hook",
    "logits_max_abs_diff",
    "steering_applied",
}


def _bench(directory: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    target = directory / "bench.json"
    code = main(
        [
            "bench",
            "--model",
            "tiny-gpt2",
            "--rounds",
            "2",
            "--max-rounds",
            "2",
            "--new-tokens",
            "4,8",
            "--no-progress",
            "--json",
            str(target),
            "--plot",
            str(directory / "sweep.png"),
            "--pytest-benchmark-json",
            str(directory / "pytest-benchmark.json"),
            *(extra or ("--arms", ",".join(EAGER_ARMS))),
        ]
    )
    return code, json.loads(target.read_text()) if target.exists() else {}


@dataclass(frozen=True)
class BenchRun:
    code: int
    payload: dict[str, Any]
    printed: str
    directory: Path


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> BenchRun:
    """One `equiv bench` on tiny-gpt2 (2 rounds, 1/4/8 new tokens), shared by the tests that read its output."""
    directory = tmp_path_factory.mktemp("bench")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code, payload = _bench(directory)
    return BenchRun(code, payload, printed.getvalue(), directory)


def test_bench_writes_records_and_plot(bench_run: BenchRun) -> None:
    assert bench_run.code == 0
    records = bench_run.payload["records"]
    cells = {(record["arm"], record["new_tokens"]) for record in records}
    assert cells == {(arm, size) for arm in EAGER_ARMS for size in (1, 4, 8)}
    for record in records:
        assert set(record) >= REQUIRED
        assert record["n"] == 2
        if record["arm"] == "hook":
            assert record["ratio_to_hook"] == 1.0
        if record["arm"] in ("plain", "iter0", "recompute"):
            assert record["ids_match_hook"] is True and record["steering_applied"] is True
            assert record["status"] == "ok"
    assert (bench_run.directory / "sweep.png").read_bytes().startswith(b"\x89PNG")
    assert set(bench_run.payload["growth_exponents"]) == set(EAGER_ARMS)


def test_the_pytest_benchmark_json_holds_the_sweeps_own_rounds(bench_run: BenchRun) -> None:
    """Each arm is timed once: the pytest-benchmark file carries the very rounds the sweep reported."""
    document = json.loads((bench_run.directory / "pytest-benchmark.json").read_text())
    data = {(b["params"]["arm"], b["params"]["new_tokens"]): b["stats"]["data"] for b in document["benchmarks"]}
    assert data == {(r["arm"], r["new_tokens"]): r["wall_s"] for r in bench_run.payload["records"]}


def test_every_record_has_cpu_time_and_peak_memory_beside_wall_time(bench_run: BenchRun) -> None:
    records = bench_run.payload["records"]
    assert records, "the bench wrote no record"
    for record in records:
        assert len(record["cpu_s"]) == len(record["wall_s"]) == record["n"]
        assert all(cpu > 0 for cpu in record["cpu_s"])
        assert isinstance(record["peak_memory_bytes"], int)
    assert {"loadavg_start", "loadavg_end", "others_cpu_share", "busy"} <= set(bench_run.payload["machine_load"])


def test_table_prints_each_cell_with_its_measured_ratio(bench_run: BenchRun) -> None:
    """Every (arm, new tokens) row of the printed table carries the median and ratios written to the JSON."""
    rows = [line.split() for line in bench_run.printed.splitlines()]
    assert bench_run.payload["records"], "the bench wrote no record"
    for record in bench_run.payload["records"]:
        [row] = [row for row in rows if row[:2] == [record["arm"], str(record["new_tokens"])]]
        assert row[2] == f"{record['median_s']:.4f}"
        paired = record["paired_ratio_to_hook"]
        if paired is None:  # the hook itself
            assert record["arm"] == "hook" and "1.00x" in row
        else:  # /hook: the median per-round ratio and its CI, as in the JSON
            shown = f"{paired['median']:.2f}x [{paired['ci95_low']:.2f}, {paired['ci95_high']:.2f}]"
            assert shown in " ".join(row)
        assert f"{record['ratio_to_unsteered']:.2f}x" in row


def test_steering_not_applied_is_flagged_not_fast(
    tmp_path: Path, replace_entry: Callable[[Registry[Any], str, Any], None]
) -> None:
    replace_entry(arms.ARMS, "plain", arms.Arm("plain", True, "ignores its edit", arms.ARMS.get("unsteered").run))
    code, payload = _bench(tmp_path, "--arms", "plain,hook,unsteered")
    assert code == 1
    plain = [record for record in payload["records"] if record["arm"] == "plain"]
    assert plain and all(record["status"] == "steering not applied" for record in plain)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--arms", "plain,fast"], "unknown arm 'fast'"),
        (["--rounds", "0"], "rounds must be >= 1, got 0"),
        (["--rounds", "8", "--max-rounds", "4"], "max rounds must be >= rounds (8), got 4"),
        (["--target-ci", "0"], "--target-ci must be between 0 and 100 percent (exclusive), got 0"),
        (["--target-ci", "100"], "--target-ci must be between 0 and 100 percent (exclusive), got 100"),
        (["--budget-s", "0"], "budget must be > 0 seconds, got 0"),
        (["--new-tokens", "8,0"], "new tokens must each be >= 1"),
        (["--new-tokens", "8,x"], "expected comma-separated integers"),
        (["--layer", "7"], "layer 7 out of range; valid: 0..1"),
        (["--new-tokens", "500"], "--new-tokens 500 too large: valid 1..254 on tiny-gpt2"),
    ],
)
def test_bad_bench_arguments_exit_2(
    arguments: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "bench",
        "--model",
        "tiny-gpt2",
        "--no-progress",
        "--json",
        str(tmp_path / "b.json"),
        "--plot",
        str(tmp_path / "p.png"),
        *arguments,
    ]
    assert main(argv) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert message in errors[-1]
    assert list(tmp_path.iterdir()) == []


def test_an_arm_that_cannot_compile_is_reported_not_expressible_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from equiv_core.arms import floor

    def no_compiler(function: Any, **_options: Any) -> Callable[..., Any]:
        def compiled(*_args: Any, **_kwargs: Any) -> Any:
            raise RuntimeError("InductorError: no working C++ compiler found\nmore detail")

        return compiled

    monkeypatch.setattr(floor.torch, "compile", no_compiler)
    code, payload = _bench(tmp_path, "--arms", "floor,hook,unsteered")
    assert code == 0
    assert payload["not_expressible"] == {
        "floor": "torch.compile failed here: RuntimeError: InductorError: no working C++ compiler found"
    }
    assert {record["arm"] for record in payload["records"]} == {"hook", "unsteered"}
    assert "floor: not expressible here, not timed: torch.compile failed here" in capsys.readouterr().out
