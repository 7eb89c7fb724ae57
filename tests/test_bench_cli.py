"""``equiv bench`` end to end on a tiny model: records, plot, correctness flags, and bad arguments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from equiv_core.bench import arms
from equiv_core.cli import main

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


def _bench(tmp_path: Path, *extra: str) -> tuple[int, dict[str, object]]:
    target = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "--model",
            "tiny-gpt2",
            "--rounds",
            "2",
            "--new-tokens",
            "4,8",
            "--no-progress",
            "--json",
            str(target),
            "--plot",
            str(tmp_path / "sweep.png"),
            *extra,
        ]
    )
    return code, json.loads(target.read_text()) if target.exists() else {}


def test_bench_writes_records_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, payload = _bench(tmp_path)
    assert code == 0
    records = payload["records"]
    assert isinstance(records, list)
    cells = {(record["arm"], record["new_tokens"]) for record in records}
    assert cells == {(arm, size) for arm in arms.ARMS.names() for size in (1, 4, 8)}
    for record in records:
        assert set(record) >= REQUIRED
        assert record["n"] == 2
        if record["arm"] == "hook":
            assert record["ratio_to_hook"] == 1.0
        if record["arm"] in ("plain", "iter0", "recompute"):
            assert record["ids_match_hook"] is True and record["steering_applied"] is True
            assert record["status"] == "ok"
    assert (tmp_path / "sweep.png").read_bytes().startswith(b"\x89PNG")
    assert set(payload["growth_exponents"]) == set(arms.ARMS.names())  # type: ignore[arg-type]
    table = capsys.readouterr().out
    assert "ratio" in table or "/hook" in table
    assert "growth exponent" in table


def test_steering_not_applied_is_flagged_not_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = arms.Arm("plain", True, "ignores its edit", arms.ARMS.get("unsteered").run)
    monkeypatch.setitem(arms.ARMS._entries, "plain", broken)
    code, payload = _bench(tmp_path, "--arms", "plain,hook,unsteered")
    assert code == 1
    plain = [record for record in payload["records"] if record["arm"] == "plain"]  # type: ignore[union-attr, index]
    assert plain and all(record["status"] == "steering not applied" for record in plain)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--arms", "plain,fast"], "unknown arm 'fast'"),
        (["--rounds", "0"], "rounds must be >= 1, got 0"),
        (["--new-tokens", "8,0"], "new tokens must each be >= 1"),
        (["--new-tokens", "8,x"], "expected comma-separated integers"),
        (["--layer", "7"], "layer 7 out of range; valid: 0..1"),
        (["--new-tokens", "500"], "new tokens 500 too large: valid 1..252"),
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
    if "x" in arguments[-1].split(","):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
    else:
        assert main(argv) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert message in errors[-1]
    assert list(tmp_path.iterdir()) == []
