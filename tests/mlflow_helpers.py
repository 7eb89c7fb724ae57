"""Helpers for the MLflow tests: read runs back from a store, and run a real ``mlflow server`` on loopback."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient


def parent_and_children(uri: str, experiment: str = "equiv-bench") -> list[tuple[Any, list[Any]]]:
    """Every top-level run of ``experiment`` with its child runs, newest first."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"experiment {experiment} not in {uri}"
    runs = client.search_runs([found.experiment_id], "", max_results=1000)
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    return [(p, [r for r in runs if r.data.tags.get("mlflow.parentRunId") == p.info.run_id]) for p in parents]


def artifact_paths(uri: str, run_id: str, path: str = "") -> set[str]:
    client = MlflowClient(uri)
    found: set[str] = set()
    for entry in client.list_artifacts(run_id, path or None):
        if entry.is_dir:
            found |= artifact_paths(uri, run_id, entry.path)
        else:
            found.add(entry.path)
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Server:
    """A running ``mlflow server``: its URL, and a way to kill it outright (the server and its workers)."""

    url: str
    process: subprocess.Popen[bytes]

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=20)


@contextlib.contextmanager
def mlflow_server(backend_uri: str, artifacts: Path, timeout_s: float = 90.0) -> Iterator[Server]:
    """A real ``mlflow server`` bound to 127.0.0.1 on a free port, in its own process group; yields it and stops
    it afterwards."""
    port = free_port()
    log = (artifacts.parent / f"mlflow-server-{port}.log").open("w")
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_uri,
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                raise RuntimeError(f"mlflow server did not start: {(artifacts.parent / log.name).read_text()[-2000:]}")
            time.sleep(0.5)
        yield Server(url, process)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)
        log.close()
