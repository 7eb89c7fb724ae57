"""The default ``equiv run --json`` and a spec run's JSON, against snapshots written before the package layout
changed (issue 19, commit a4ddf25): a refactoring that moves code must not move a byte of what a run reports.

What may differ between two runs of the same code is left out: wall times, the machine's load, the MLflow run,
the git commit and whether the checkout was modified, the interpreter's path, where the packages are installed.
Logits hashes, the fingerprint and float differences depend on the CPU, the thread count and the library versions
(README, "Determinism"): they are compared where the environment recorded in the snapshot is this one, and said to
be skipped (with what differs) elsewhere. To take a deliberate change, rewrite a snapshot with the command in
SNAPSHOTS and say why in the commit.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent / "snapshots"
# snapshot file -> the `equiv run` arguments that wrote it (with `--no-mlflow --json FILE`)
SNAPSHOTS = {
    "run-default.json": (),
    "run-actadd-all.json": ("--recipe", "actadd-all"),
}
# Keys whose values differ between two runs of the same code on the same machine.
VOLATILE = re.compile(
    r"(^|\.)(seconds|load_seconds|timings|time_breakdown|machine_load|mlflow|git_commit|git_dirty|executable)(\.|\[|$)"
)
# Values that follow from float arithmetic: the same code gives other bits on another CPU, thread count or release.
MACHINE_DEPENDENT = re.compile(
    r"sha256|fingerprint|max_abs_diff|allowance|allowed_logits_diff|message|within_tolerance"
)
# What a snapshot records about where it was made that changes the machine-dependent values (README "Determinism").
RECORDED = ("cpu_model", "cpu_capability", "torch_threads", "torch_version", "transformers_version", "nnsight_version")


def _flat(value: Any, path: str = "") -> dict[str, Any]:
    """``{"a.b[0]": leaf}`` for every leaf of a JSON document."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{path}.{key}" if path else key).items()}
    if isinstance(value, list):
        return {k: v for i, item in enumerate(value) for k, v in _flat(item, f"{path}[{i}]").items()}
    return {path: value}


def _kept(document: dict[str, Any]) -> dict[str, Any]:
    """The values to compare: the volatile ones left out, the install path in ``model_source`` made neutral."""
    kept = {key: value for key, value in _flat(document).items() if not VOLATILE.search(key)}
    kept["model_source"] = re.sub(r"\S*/site-packages/", "<site-packages>/", kept["model_source"])
    return kept


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Each snapshot's run, made now by this code in a fresh process (as a user runs it)."""
    directory = tmp_path_factory.mktemp("snapshots")
    made = {}
    for name, arguments in SNAPSHOTS.items():
        target = directory / name
        command = [sys.executable, "-m", "equiv_core", "run", *arguments, "--no-mlflow", "--json", str(target)]
        subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
        made[name] = json.loads(target.read_text())
    return made


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_run_json_keeps_every_key_and_every_machine_independent_value(
    runs: dict[str, dict[str, Any]], name: str
) -> None:
    """Same keys in the same order, and the same token ids, verdicts, shapes, settings and provenance, on any
    machine."""
    before, now = _kept(json.loads((HERE / name).read_text())), _kept(runs[name])
    assert before, f"{name}: the snapshot holds nothing to compare"
    assert list(now) == list(before)  # the same keys in the same order
    independent = [key for key in before if not MACHINE_DEPENDENT.search(key) and not key.startswith("environment.")]
    assert len(independent) > 100, "too few values left to compare: the filters above are too wide"
    assert {key: now[key] for key in independent} == {key: before[key] for key in independent}


@pytest.mark.parametrize("name", SNAPSHOTS)
def test_run_json_is_bit_identical_where_the_snapshot_was_made(runs: dict[str, dict[str, Any]], name: str) -> None:
    """Every value but wall times, load and paths, the logits hashes and the fingerprint included."""
    before, now = json.loads((HERE / name).read_text()), runs[name]
    differs = {key: (before["environment"][key], now["environment"][key]) for key in RECORDED}
    differs = {key: pair for key, pair in differs.items() if pair[0] != pair[1]}
    if differs:
        pytest.skip(f"snapshot made elsewhere ({differs}): logits hashes depend on CPU, threads and versions")
    # The rest of the environment block is the install's provenance (Python's patch release, platform), not output.
    kept_before, kept_now = (
        {k: v for k, v in _kept(d).items() if not k.startswith("environment.")} for d in (before, now)
    )
    assert kept_now == kept_before
    assert now["fingerprint"] == before["fingerprint"]
