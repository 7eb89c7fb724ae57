"""Models beyond plain text-only decoders (issue 21, item 3): a multimodal causal LM whose sizes live in a text
sub-config and whose vision tower is deeper than its text stack (Gemma 3), stacked residual streams (Gemma 3n),
and a PEFT LoRA adapter loaded as the model."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hf_tiny_models import HIDDEN, TEXT_LAYERS, gemma3_multimodal, gemma3n_text, mamba, save_model_dir
from mlflow_helpers import parent_and_children

from equiv_core.arms.reference import hook_generate
from equiv_core.arms.steering import Edit
from equiv_core.cli.main import main
from equiv_core.models import load as load_module
from equiv_core.models.architecture import UnsupportedArchitecture, describe, find_decoder_layers
from equiv_core.models.load import LoadedModel, load_model
from equiv_core.support.errors import ExitStatus


@pytest.fixture(scope="module")
def gemma3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_model_dir(gemma3_multimodal(), tmp_path_factory.mktemp("gemma3"))


@pytest.fixture(scope="module")
def gemma3n_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_model_dir(gemma3n_text(), tmp_path_factory.mktemp("gemma3n"))


def test_gemma3_multimodal_steers_the_text_stack_not_the_deeper_vision_tower() -> None:
    model = gemma3_multimodal().eval()
    path, layers = find_decoder_layers(model)
    assert path == "model.language_model.layers" and len(layers) == TEXT_LAYERS
    assert len(model.model.vision_tower.encoder.layers) > TEXT_LAYERS  # the largest ModuleList is the vision tower's


def test_gemma3_multimodal_sizes_come_from_the_text_config() -> None:
    model = gemma3_multimodal().eval()
    assert getattr(model.config, "hidden_size", None) is None  # the top-level config has none
    architecture = describe(model, torch.tensor([[5, 6, 7]]))
    assert (architecture.num_layers, architecture.hidden_size, architecture.max_positions) == (TEXT_LAYERS, HIDDEN, 256)


def test_every_finding_holds_on_a_gemma3_multimodal_model(gemma3_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    assert main(["run", "--model", str(gemma3_dir), "--max-new-tokens", "6", "--json", str(target), "--no-mlflow"]) == 0
    payload = json.loads(target.read_text())
    assert payload["architecture"]["layers_path"] == "model.language_model.layers"
    assert payload["architecture"]["hidden_size"] == HIDDEN
    assert [finding["verdict"] for finding in payload["findings"]] == ["PASS"] * 5


def test_a_gemma3_vector_of_the_text_width_is_accepted(gemma3_dir: Path, tmp_path: Path) -> None:
    vector = tmp_path / "v.pt"
    torch.save(torch.ones(HIDDEN), vector)
    argv = ["run", "--model", str(gemma3_dir), "--op", "add", "--vector", str(vector), "--scale", "4"]
    assert main([*argv, "--layers", "1", "--positions", "all", "--max-new-tokens", "4", "--no-mlflow"]) == 0


def test_stacked_streams_are_refused_with_exit_2_naming_the_shape(
    gemma3n_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--model", str(gemma3n_dir), "--no-mlflow"]) == ExitStatus.BAD_INPUT
    [line] = capsys.readouterr().err.strip().splitlines()[-1:]
    assert "[4, 1, 2, 64], not [batch, seq, hidden]" in line and "stacks 4 streams" in line


def test_the_raw_hook_refuses_to_edit_a_stacked_stream_tensor() -> None:
    model = gemma3n_text().eval()
    with pytest.raises(UnsupportedArchitecture, match=r"shape \[4, 1, 3, 64\]"):
        hook_generate(model, torch.tensor([[5, 6, 7]]), 2, 0, Edit(0, -1))


def test_every_spec_finding_holds_on_a_state_space_model(tmp_path: Path) -> None:
    """Mamba's cache keeps a recurrent state, not columns: the block observer counts the columns each block ran on."""
    directory = save_model_dir(mamba(), tmp_path / "mamba")
    target = tmp_path / "out.json"
    argv = ["run", "--model", str(directory), "--op", "add", "--vector", "random:3", "--scale", "4", "--layers", "1"]
    assert main([*argv, "--positions", "all", "--max-new-tokens", "4", "--json", str(target), "--no-mlflow"]) == 0
    assert {finding["verdict"] for finding in json.loads(target.read_text())["findings"]} == {"PASS"}


@pytest.fixture(scope="module")
def lora_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny GPT-2 base model directory and a LoRA adapter on it whose weights are not the identity."""
    from peft import LoraConfig, get_peft_model

    base_dir = tmp_path_factory.mktemp("base")
    loaded = load_model("tiny-gpt2")
    loaded.model.save_pretrained(base_dir)
    loaded.tokenizer.save_pretrained(base_dir)
    base = load_model(str(base_dir)).model
    torch.manual_seed(0)
    adapted = get_peft_model(
        base, LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True, init_lora_weights=False)
    )
    adapter_dir = tmp_path_factory.mktemp("adapter")
    adapted.save_pretrained(adapter_dir)
    return base_dir, adapter_dir


def test_a_lora_adapter_loads_on_its_base_model_and_changes_it(lora_dirs: tuple[Path, Path]) -> None:
    base_dir, adapter_dir = lora_dirs
    loaded = load_model(str(adapter_dir))
    assert loaded.adapter is not None
    assert (loaded.adapter.base_model, loaded.adapter.peft_type) == (str(base_dir), "LORA")
    base = load_model(str(base_dir)).model
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        assert not torch.equal(loaded.model(ids).logits, base(ids).logits)  # the adapter is applied


def test_a_lora_run_names_the_base_model_and_the_adapter(
    lora_dirs: tuple[Path, Path], tmp_path: Path, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    base_dir, adapter_dir = lora_dirs
    target = tmp_path / "out.json"
    assert main(["run", "--model", str(adapter_dir), "--max-new-tokens", "6", "--json", str(target)]) == 0
    payload = json.loads(target.read_text())
    assert payload["adapter"] == {"path": str(adapter_dir), "base_model": str(base_dir), "peft_type": "LORA"}
    assert f"PEFT LORA adapter {adapter_dir} on base model {base_dir}" in capsys.readouterr().out
    [(parent, _children)] = parent_and_children(store)
    assert (parent.data.tags["base_model"], parent.data.tags["adapter"]) == (str(base_dir), str(adapter_dir))


def test_an_adapter_without_peft_is_one_line_saying_what_to_install(
    lora_dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _base_dir, adapter_dir = lora_dirs
    real = load_module.package_version
    monkeypatch.setattr(load_module, "package_version", lambda name: None if name == "peft" else real(name))
    assert main(["run", "--model", str(adapter_dir), "--no-mlflow"]) == ExitStatus.ENVIRONMENT
    [line] = capsys.readouterr().err.strip().splitlines()[-1:]
    assert "is a PEFT LORA adapter on base model" in line and "pip install 'equiv-bench[peft]'" in line


def test_a_model_without_an_adapter_records_none(load_cached: Callable[[str], LoadedModel]) -> None:
    assert load_cached("tiny-gpt2").adapter is None
