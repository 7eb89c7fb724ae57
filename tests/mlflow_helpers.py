"""Helpers for the MLflow tests: read runs back from a store, and run a real ``mlflow server`` on loopback."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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
    """A real ``mlflow server`` bound to 127.0.0.1 on a free port, in its own process group, sized as ``nox -s ui``
    runs it (one web worker, no job runner); yields it and stops it afterwards."""
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
    environment = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=environment)
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


def postgres_bin() -> Path | None:
    """The folder of PostgreSQL's server programs: Debian's postgresql package keeps them in
    /usr/lib/postgresql/<major>/bin, out of PATH; else the folder on PATH that has them all."""
    needed = ("initdb", "pg_ctl", "postgres", "createdb")
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda path: int(path.parent.name))
    on_path = [Path(found).parent for found in [shutil.which("initdb")] if found is not None]
    return next(
        (folder for folder in [*reversed(debian), *on_path] if all((folder / n).is_file() for n in needed)), None
    )


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A throw-away PostgreSQL server on 127.0.0.1 (trust auth, no fsync), started and stopped here; yields the
    SQLAlchemy URI of an empty database ``mlflow``. PostgreSQL refuses to run as root: as root, its programs run as
    the ``postgres`` user the Debian package creates."""
    bindir = postgres_bin()
    assert bindir is not None, "PostgreSQL is not installed"
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="equiv-postgres-"))  # under /tmp: the postgres user can reach it
    if as_user:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", free_port()

    def run(*command: str) -> None:
        done = subprocess.run([*as_user, *command], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{' '.join(command)}: {done.stdout[-1500:]}{done.stderr[-1500:]}"

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "equiv", "--auth=trust", "--no-sync", "-E", "UTF8")
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "server.log"), "-w", "start")
        try:
            run(str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "equiv", "mlflow")
            yield f"postgresql://equiv@127.0.0.1:{port}/mlflow"
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
