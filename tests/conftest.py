"""Shared fixtures: session-scoped, read-only models and contexts (tiny ones for the unit tier)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the test suite must never reach a model hub
# Tests log to a throw-away MLflow store, never to the repository's mlflow/ folder or a team server.
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ["EQUIV_MLFLOW_DIR"] = tempfile.mkdtemp(prefix="equiv-test-mlflow-")

from equiv_core.context import SteeringContext, build_context  # noqa: E402
from equiv_core.determinism import configure_determinism  # noqa: E402
from equiv_core.models import LoadedModel, load_model  # noqa: E402

TINY_MODELS = ("tiny-gpt2", "tiny-llama")


@pytest.fixture(scope="session")
def load_cached() -> Callable[[str], LoadedModel]:
    """Load each model once per test session; tests must not modify what they get."""
    cache: dict[str, LoadedModel] = {}

    def load(name: str) -> LoadedModel:
        if name not in cache:
            configure_determinism(0)
            cache[name] = load_model(name, "cpu", "float32")
        return cache[name]

    return load


@pytest.fixture(scope="session")
def context_for(load_cached: Callable[[str], LoadedModel]) -> Callable[[str], SteeringContext]:
    """A steering context per model name, built once per session."""
    contexts: dict[str, SteeringContext] = {}

    def get(name: str) -> SteeringContext:
        if name not in contexts:
            contexts[name] = build_context(load_cached(name))
        return contexts[name]

    return get


@pytest.fixture(params=TINY_MODELS)
def tiny_context(request: pytest.FixtureRequest, context_for: Callable[[str], SteeringContext]) -> SteeringContext:
    """Each tiny model in turn: one GPT-2-style, one Llama-style."""
    return context_for(request.param)
