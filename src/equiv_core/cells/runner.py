"""Run one cell in an environment that already has its pins: the one cell runner that ``noxfile.py`` (in a nox
session's virtualenv) and the Ray engine (in a task's ``runtime_env``) both call.

It runs the cell's import check, then ``python -m equiv_core <cell command>``; the cell writes its own record (and
logs its MLflow run). An import that fails is an ``unsupported`` record with the import's last line, a cell
process that crashes an ``error`` record with its last error line: a failure is a result, never a crash of the
matrix. The cell process dies with the process that started it (Linux ``PR_SET_PDEATHSIG``): a Ray worker killed
mid-cell leaves no cell running. Standard library only (``noxfile.py`` imports it with nox's own interpreter).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from equiv_core.cells.cell import Cell, NotRun

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def tail(output: str) -> str:
    """The most telling line of a failed command's output (the last line naming an error, else the last line)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["no output"])[-1][:400]


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when the thread that started it ends (prctl(2)
    PR_SET_PDEATHSIG; Linux only, None elsewhere): Ray runs a task on its worker's main thread, so the cell dies
    with its worker. libc is loaded here, before the fork; in the child, the call and a check that the parent did
    not die before it (it would then never signal)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def set_death_signal() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return set_death_signal


def run_python(
    python: Path,
    arguments: list[str],
    env: Mapping[str, str],
    echo: Callable[[str], None] | None = None,
    cwd: Path | None = None,
) -> tuple[int, str]:
    """Run ``python arguments`` with ``env`` and keep its output (stdout and stderr together); ``echo`` gets each
    line as it comes, for long steps. Returns its exit status and the output."""
    lines = []
    with subprocess.Popen(
        [str(python), *arguments],
        cwd=cwd,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(env),
        preexec_fn=_die_with_parent(),  # noqa: PLW1509 - a prctl and a getppid in the child, before exec
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if echo is not None:
                echo(line)
    return process.returncode, "".join(lines)


def run_cell(
    cell: Cell,
    python: Path,
    out: Path,
    env: Mapping[str, str],
    say: Callable[[str], None],
    echo: Callable[[str], None] | None = None,
    tracking_uri: str | None = None,
    cwd: Path | None = None,
) -> Path:
    """Run ``cell`` with ``python`` (an interpreter of an environment that has the cell's pins), writing its record
    into ``out``; returns the record's path. ``env`` is the cell process's whole environment (threads, tracking
    store); ``echo`` gets the cell's output line by line; ``say`` one line when the cell could not run."""
    out.mkdir(parents=True, exist_ok=True)
    record = out / f"{cell.slug}.json"
    record.unlink(missing_ok=True)  # what is read back is this run's record
    if cell.import_check is not None:
        drop_broken_torchvision(python, env, say)
        status, output = run_python(python, ["-c", cell.import_check], env, cwd=cwd)
        if status != 0:
            last = [line.strip() for line in output.splitlines() if line.strip()][-1:] or ["no output"]
            say(f"{cell.id}: unsupported (import failed)")
            return cell.record_not_run(NotRun.UNSUPPORTED, f"import failed: {last[0][:400]}", out)
    arguments = ["-m", "equiv_core", *cell.arguments(out, tracking_uri)]
    status, output = run_python(python, arguments, env, echo, cwd)
    if status not in cell.result_exit_codes or not record.is_file():
        command = cell.arguments(out)[0]
        crashed = f"{command} crashed: {tail(output)}" if status != 0 else f"{command} wrote no record: {tail(output)}"
        say(f"{cell.id}: error ({crashed})")
        return cell.record_not_run(NotRun.ERROR, crashed, out)
    return record


def drop_broken_torchvision(python: Path, env: Mapping[str, str], say: Callable[[str], None]) -> None:
    """Uninstall a torchvision whose compiled operators do not load with the installed torch: nnsight 0.4 declares
    torchvision and never imports it, but transformers imports it whenever it is installed, so it would fail every
    cell for a packaging reason ("operator torchvision::nms does not exist" with torch 2.13.0+cpu; shared NOTES)."""
    status, output = run_python(python, ["-c", "import torchvision"], env)
    if status == 0 or "No module named 'torchvision'" in output:
        return
    removed, _ = run_python(python, ["-m", "pip", "uninstall", "--yes", "--quiet", "torchvision"], env)
    done = "uninstalled" if removed == 0 else "could not uninstall it: the import check decides"
    say(f"torchvision does not load with this torch ({tail(output)}): {done}")


def available_releases(python: Path, package: str, env: Mapping[str, str]) -> list[str]:
    """Every version of ``package`` on the package index ``python``'s pip is configured with (``pip index
    versions``, newest first); ValueError with pip's reason when it cannot list them."""
    status, output = run_python(python, ["-m", "pip", "index", "versions", package], env)
    line = next((line for line in output.splitlines() if line.startswith("Available versions:")), None)
    if status != 0 or line is None:
        raise ValueError(f"cannot list {package} releases on the package index: {tail(output)}")
    return [version.strip() for version in line.removeprefix("Available versions:").split(",")]
