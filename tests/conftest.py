"""Shared fixtures and the test tiers.

Tiers (one per test, declared in pyproject.toml):
- ``unit``: tiny random models, in-process; the default for a test with no tier marker. A unit test that starts
  a subprocess itself or loads ``smollm2-135m`` / ``gpt2-small-random`` errors, naming the tier it belongs in.
- ``integration``: ``smollm2-135m``, the pytest-benchmark suite under ``bench/``, CLI subprocesses.
- ``slow``: ``gpt2-small-random``, a real MLflow server, the browser.
- ``gpu``: needs CUDA; runs on ``--device`` (default ``cuda:0`` where CUDA exists, as in nnsight's own conftest),
  skipped with the reason elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the test suite must never reach a model hub
# Tests log to a throw-away MLflow store, never to the repository's mlflow/ folder or a team server.
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ["EQUIV_MLFLOW_DIR"] = tempfile.mkdtemp(prefix="equiv-test-mlflow-")

from equiv_core.arms.context import SteeringContext  # noqa: E402
from equiv_core.arms.prepare import prepare_run  # noqa: E402
from equiv_core.models import load as models  # noqa: E402
from equiv_core.models.load import LoadedModel  # noqa: E402
from equiv_core.support.registry import Registry  # noqa: E402
from equiv_core.tracking.store import Tracker, resolve_tracking_uri  # noqa: E402

TINY_MODELS = ("tiny-gpt2", "tiny-llama")
TIERS = ("unit", "integration", "slow", "gpu")
# Models a unit test may not load, and the tier that may.
HEAVY_MODELS = {"smollm2-135m": "integration", "gpt2-small-random": "slow"}
TESTS_DIR = Path(__file__).resolve().parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--device",
        default="cuda:0" if torch.cuda.is_available() else "cpu",
        help="device of the gpu tier (default: cuda:0 where CUDA exists, else cpu, which skips that tier)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give every test without a tier the ``unit`` tier; a test in two tiers is a mistake in the suite."""
    for item in items:
        tiers = [tier for tier in TIERS if item.get_closest_marker(tier) is not None]
        if len(tiers) > 1:
            raise pytest.UsageError(f"{item.nodeid} is marked {' and '.join(tiers)}; a test belongs to one tier")
        if not tiers:
            item.add_marker(pytest.mark.unit)
        if item.get_closest_marker("gpu") is not None and torch.device(config.getoption("--device")).type != "cuda":
            item.add_marker(pytest.mark.skip(reason="gpu tier: needs CUDA (--device cuda); this machine has none"))


def _started_by_a_test() -> bool:
    """True when the innermost caller outside the subprocess module is test code (not the library)."""
    frame = sys._getframe(2)
    # Skip the subprocess module and this file's own Popen wrappers (the two fixtures below chain theirs).
    while frame is not None and frame.f_code.co_filename in (subprocess.__file__, __file__):
        frame = frame.f_back  # type: ignore[assignment]
    return frame is not None and Path(frame.f_code.co_filename).resolve().is_relative_to(TESTS_DIR)


@pytest.fixture(autouse=True)
def unit_tier_rules(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the unit tier what its name says: in-process, tiny models only.

    Subprocesses the library itself starts (``git`` for provenance, torch's ``collect_env``) are allowed.
    """
    if request.node.get_closest_marker("unit") is None:
        return
    real_init = subprocess.Popen.__init__

    def guarded_init(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
        if _started_by_a_test():
            raise RuntimeError("a unit test started a subprocess: mark it integration (or slow)")
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded_init)
    for name, tier in HEAVY_MODELS.items():
        builtin = models.BUILTIN_MODELS[name]

        def refuse(name: str = name, tier: str = tier) -> Any:
            raise RuntimeError(f"a unit test loaded {name}: mark it {tier}")

        monkeypatch.setitem(models.BUILTIN_MODELS, name, type(builtin)(builtin.name, builtin.description, refuse))


@pytest.fixture(autouse=True)
def reap_test_processes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every process the test's own code starts (``Popen`` called from tests/) is killed, with its children, and
    reaped when the test ends, passed or failed.

    A child left running outlives its test: it competes for the cores, and the ``Popen`` object's
    ResourceWarning ("subprocess N is still running") fails whichever later test garbage-collects it
    (issue 18). Processes started by module or session fixtures are their fixtures' business; the library's own
    short-lived ones (``git``, torch's ``collect_env``) are waited for where it starts them.
    """
    started: list[subprocess.Popen[Any]] = []
    real_init = subprocess.Popen.__init__

    def recording_init(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> None:
        real_init(self, *args, **kwargs)
        if _started_by_a_test():
            started.append(self)

    monkeypatch.setattr(subprocess.Popen, "__init__", recording_init)
    yield
    for process in started:
        if process.poll() is None:
            children: list[psutil.Process] = []
            with contextlib.suppress(psutil.Error):
                children = psutil.Process(process.pid).children(recursive=True)
            process.kill()  # the parent first: a supervisor (mlflow's server) would replace a killed worker
            for child in children:
                with contextlib.suppress(psutil.Error):
                    child.kill()
        process.wait(timeout=30)


@pytest.fixture(scope="session")
def device(pytestconfig: pytest.Config) -> torch.device:
    """The device of the gpu tier (``--device``)."""
    return torch.device(pytestconfig.getoption("--device"))


@pytest.fixture(scope="session")
def context_for() -> Callable[[str], SteeringContext]:
    """A steering context per model name (CPU, float32), prepared once per session like every entry point does;
    tests must not modify what they get."""
    contexts: dict[str, SteeringContext] = {}

    def get(name: str) -> SteeringContext:
        if name not in contexts:
            contexts[name] = prepare_run(name, "cpu", "float32").context
        return contexts[name]

    return get


@pytest.fixture(scope="session")
def load_cached(context_for: Callable[[str], SteeringContext]) -> Callable[[str], LoadedModel]:
    """The loaded model behind :func:`context_for`'s context."""
    return lambda name: context_for(name).loaded


@pytest.fixture(params=TINY_MODELS)
def tiny_context(request: pytest.FixtureRequest, context_for: Callable[[str], SteeringContext]) -> SteeringContext:
    """Each tiny model in turn: one GPT-2-style, one Llama-style."""
    return context_for(request.param)


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow SQLite store with its schema migrated once (creating one takes about a second)."""
    directory = tmp_path_factory.mktemp("mlflow-template")
    Tracker(f"sqlite:///{directory / 'mlflow.db'}", "template").connect()
    return directory / "mlflow.db"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_template: Path) -> str:
    """A fresh local store for one test (a copy of the migrated template), selected the way users select the
    default one (``EQUIV_MLFLOW_DIR``); returns its tracking URI."""
    directory = tmp_path / "mlflow"
    directory.mkdir()
    shutil.copyfile(mlflow_template, directory / "mlflow.db")
    monkeypatch.setenv("EQUIV_MLFLOW_DIR", str(directory))
    return resolve_tracking_uri()


@pytest.fixture
def unused_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Where the default store would be, not created: for tests that check nothing creates it."""
    monkeypatch.setenv("EQUIV_MLFLOW_DIR", str(tmp_path / "mlflow"))
    return resolve_tracking_uri()


@pytest.fixture
def replace_entry() -> Iterator[Callable[[Registry[Any], str, Any], None]]:
    """``replace_entry(registry, name, entry)``: swap a registered entry for this test only (e.g. an arm that
    ignores its edit), through the registry's public ``override``."""
    with ExitStack() as stack:
        yield lambda registry, name, entry: stack.enter_context(registry.override(name, entry))
