"""A team's audit: cells on separate machines (here: separate processes) log to one MLflow server backed by
PostgreSQL, and the report and status table are built from that server, not from local files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow_helpers import mlflow_server, postgres_bin, postgres_server

from equiv_core.audit.record import read_cells
from equiv_core.audit.status import read_status

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        postgres_bin() is None, reason="PostgreSQL is not installed (Debian's postgresql package; .ci/run installs it)"
    ),
]


def _equiv(*arguments: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "equiv_core", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def test_cells_logged_from_two_processes_to_a_postgres_backed_server_make_the_report(tmp_path: Path) -> None:
    with postgres_server() as database, mlflow_server(database, tmp_path / "artifacts") as server:
        cells = {"nnsight='0.8.1'": tmp_path / "machine-a", "torch='2.13.0'": tmp_path / "machine-b"}
        running = [
            _equiv(
                "audit-cell", "--cell", cell, "--models", "tiny-gpt2", "--out", str(out), "--tracking-uri", server.url
            )
            for cell, out in cells.items()
        ]
        for process in running:
            _stdout, stderr = process.communicate(timeout=600)
            assert process.returncode == 0, stderr[-3000:]
        report = tmp_path / "from-server"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "equiv_core",
                "audit-report",
                "--tracking-uri",
                server.url,
                "--results",
                str(report),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
    assert f"read 2 audit cells from {server.url}" in done.stderr
    assert {cell.cell for cell in read_cells(report)} == set(cells)
    markdown = (report / "REPORT.md").read_text()
    assert "| torch='2.13.0' |" in markdown
    status = read_status(report / "status.json")
    [other] = [record for record in status.records if record.cell == "torch='2.13.0'"]
    assert other.ids_equal_reference is True and other.observables["finding.iter0_equivalence"] == "PASS"
    row = next(line for line in markdown.splitlines() if line.startswith("| torch='2.13.0' |"))
    assert row.rstrip(" |").endswith("| yes | yes | 0")  # logits fetched from the server: compared, identical
