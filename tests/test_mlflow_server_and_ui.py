"""As a user would: log to a real ``mlflow server`` over HTTP, and look at the runs in the MLflow UI.

The UI tests drive Debian's Chromium headless (installed by .ci/run) against a server on 127.0.0.1 and keep
screenshots of the runs page and the compare view in results/test-artifacts/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from mlflow_helpers import artifact_paths, mlflow_server, parent_and_children

from equiv_core.config.catalog import RUNS_PAGE
from mlflow import MlflowClient

pytestmark = pytest.mark.slow

ARTIFACT_DIR = Path(__file__).resolve().parents[1] / "results" / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _equiv(*arguments: str, environment: dict[str, str] | None = None, exit_code: int = 0) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "equiv_core", *arguments],
        capture_output=True,
        text=True,
        env={**os.environ, **(environment or {})},
        timeout=600,
    )
    assert result.returncode == exit_code, result.stderr[-3000:]


def test_equiv_run_logs_to_a_tracking_server_over_http(tmp_path: Path) -> None:
    with mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts") as server:
        url = server.url
        _equiv(
            "run",
            "--model",
            "tiny-gpt2",
            "--only",
            "iter0_equivalence,steered_differs",
            environment={"MLFLOW_TRACKING_URI": url},
        )
        [(parent, children)] = parent_and_children(url)
        assert parent.info.status == "FINISHED"
        assert parent.data.tags["finding.iter0_equivalence"] == "PASS"
        assert len(children) == 2
        assert "results.json" in artifact_paths(url, parent.info.run_id)
        local = MlflowClient(url).download_artifacts(parent.info.run_id, "results.json", str(tmp_path))
        assert json.loads(Path(local).read_text())["model"] == "tiny-gpt2"


def _chromium(url: str, *flags: str, profile: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1400,1000",
        "--virtual-time-budget=20000",
        *flags,
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_mlflow_ui_compare_view_shows_runs_and_metrics(tmp_path: Path) -> None:
    store = tmp_path / "mlflow"
    for model in ("tiny-gpt2", "tiny-llama"):
        _equiv("run", "--model", model, "--only", "steered_differs", environment={"EQUIV_MLFLOW_DIR": str(store)})
    local_uri = f"sqlite:///{store / 'mlflow.db'}"
    runs = parent_and_children(local_uri)
    run_ids = [parent.info.run_id for parent, _ in runs]
    experiment_id = runs[0][0].info.experiment_id
    with mlflow_server(local_uri, store / "artifacts") as server:
        url = server.url
        page = (
            f"{url}/#/compare-runs?runs={urllib.parse.quote(json.dumps(run_ids))}"
            f"&experiments={urllib.parse.quote(json.dumps([experiment_id]))}"
        )
        dom = _chromium(page, "--dump-dom", profile=tmp_path / "profile-dom").stdout
        ARTIFACT_DIR.mkdir(parents=True, exist_ok=True)
        screenshot = ARTIFACT_DIR / "mlflow-compare-view.png"
        _chromium(page, f"--screenshot={screenshot}", profile=tmp_path / "profile-shot")
    assert "Comparing 2 Runs" in dom
    assert "run tiny-gpt2" in dom and "run tiny-llama" in dom
    assert "holds.steered_differs" in dom
    assert screenshot.read_bytes().startswith(b"\x89PNG") and screenshot.stat().st_size > 20_000


def _status_icon(dom: str, run_name: str) -> str:
    """The CSS class of the status icon MLflow draws beside ``run_name`` in the runs table (its "Created" cell)."""
    found = re.search(re.escape(run_name) + r"</span>.*?runDateAndNestInfo.*?class=\"anticon ([\w-]+)\"", dom, re.S)
    assert found is not None, f"no status icon found for {run_name!r}"
    return found.group(1)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_the_runs_page_lists_each_run_by_what_it_ran_and_its_verdict(tmp_path: Path) -> None:
    """The page `nox -s ui` prints (MLflow 3.17 opens an experiment on its GenAI pages otherwise): every run named
    by recipe, model and verdict, and a run that FAILs its findings drawn with another status icon than one that
    PASSes (MLflow's green tick is for FINISHED runs only)."""
    store = tmp_path / "mlflow"
    environment = {"EQUIV_MLFLOW_DIR": str(store)}
    for recipe, exit_code in (("actadd-all", 0), ("wrong-late-window", 1)):
        arguments = ("run", "--model", "tiny-gpt2", "--recipe", recipe, "--max-new-tokens", "4")
        _equiv(*arguments, environment=environment, exit_code=exit_code)
    local_uri = f"sqlite:///{store / 'mlflow.db'}"
    experiment_id = parent_and_children(local_uri)[0][0].info.experiment_id
    with mlflow_server(local_uri, store / "artifacts") as server:
        page = RUNS_PAGE.format(url=server.url, experiment_id=experiment_id)
        dom = _chromium(page, "--dump-dom", profile=tmp_path / "profile-dom").stdout
        ARTIFACT_DIR.mkdir(parents=True, exist_ok=True)
        screenshot = ARTIFACT_DIR / "mlflow-runs-page.png"
        _chromium(page, f"--screenshot={screenshot}", profile=tmp_path / "profile-shot")
    passing, failing = "run actadd-all tiny-gpt2 PASS 4/4", "run wrong-late-window tiny-gpt2 FAIL 3/4"
    assert passing in dom and failing in dom
    assert _status_icon(dom, passing) != _status_icon(dom, failing)
    assert screenshot.read_bytes().startswith(b"\x89PNG") and screenshot.stat().st_size > 20_000
