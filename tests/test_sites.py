"""Steering sites (issue 21, item 1): every site x op on the tiny models against the raw-hook reference, what each
site is on an architecture where sub-layer outputs are residual-added (BLOOM), head columns, and bad sites."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from hf_tiny_models import phi, save_model_dir
from spec_helpers import resolved_spec, spec_run, spec_verdicts
from transformers import BloomConfig, BloomForCausalLM

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.nnsight import NnsightSteering
from equiv_core.arms.reference import spec_hooks
from equiv_core.arms.steering import PassShape, Touch
from equiv_core.cli.main import main
from equiv_core.models.architecture import find_decoder_layers
from equiv_core.models.sites import resolve_sites
from equiv_core.spec.steering_spec import Heads, Site
from equiv_core.support.errors import ExitStatus

SITES = {
    "block-input": {"site": "block-input", "layers": "1"},
    "block-input-0": {"site": "block-input", "layers": "0"},
    "attention-output": {"site": "attention-output", "layers": "0:2"},
    "mlp-output": {"site": "mlp-output", "layers": "0:2"},
    "head-input": {"site": "head-input", "heads": "0,2", "layers": "0:2"},
    "module": {"site": "module:mlp", "layers": "1"},
    "module-input": {"site": "module-input:mlp", "layers": "1"},
}
OPS = {
    "zero": {"op": "zero"},
    "add": {"op": "add", "vector": "random:7", "scale": "6"},
    "set": {"op": "set", "vector": "random:7"},
    "ablate": {"op": "ablate", "vector": "random:7"},
    "clamp": {"op": "clamp", "vector": "random:7", "scale": "2xnorm"},
    "scale": {"op": "scale", "scale": "-3"},
}


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("site", list(SITES))
@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama"])
def test_every_site_and_op_agrees_with_the_raw_hook(
    context_for: Callable[[str], SteeringContext], model: str, site: str, op: str
) -> None:
    """Every spec finding holds: the site is what it says, every arm touches the intent, the nnsight arms give the
    raw hook's ids and logits, cached equals recompute, and the steering changes the output."""
    run = spec_run(context_for(model), **SITES[site], **OPS[op], positions="all")
    verdicts = spec_verdicts(run)
    assert {name: verdict for name, (verdict, _message) in verdicts.items()} == dict.fromkeys(verdicts, "PASS"), (
        verdicts
    )


def test_an_input_shared_by_attention_and_mlp_is_edited_for_the_attention_only(tmp_path: Path) -> None:
    """Phi hands one normalised tensor to attention and MLP: an edit of the attention's input must not reach the
    MLP (nnsight's arm replaces the input with an edited copy, as the hook does)."""
    directory = save_model_dir(phi(), tmp_path / "phi")
    target = tmp_path / "out.json"
    argv = ["run", "--model", str(directory), "--op", "add", "--vector", "random:3", "--scale", "4", "--layers", "1"]
    argv += ["--site", "module-input:self_attn", "--positions", "all", "--max-new-tokens", "4", "--json", str(target)]
    assert main([*argv, "--no-mlflow"]) == 0
    assert {finding["verdict"] for finding in json.loads(target.read_text())["findings"]} == {"PASS"}


def test_an_input_given_as_the_hidden_states_keyword_is_steered_alike(
    context_for: Callable[[str], SteeringContext],
) -> None:
    """Llama's block calls its attention with keywords only (hidden_states=...): the hook and nnsight's .input agree."""
    run = spec_run(context_for("tiny-llama"), site="module-input:self_attn", layers="1", **OPS["add"], positions="all")
    verdicts = spec_verdicts(run)
    assert {name: verdict for name, (verdict, _message) in verdicts.items()} == dict.fromkeys(verdicts, "PASS")


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        (
            "tiny-gpt2",
            {
                "block-input": "transformer.h.1",
                "attention-output": "transformer.h.1.attn",
                "mlp-output": "transformer.h.1.mlp",
                "head-input": "transformer.h.1.attn.c_proj",
            },
        ),
        (
            "tiny-llama",
            {
                "block-input": "model.layers.1",
                "attention-output": "model.layers.1.self_attn",
                "mlp-output": "model.layers.1.mlp",
                "head-input": "model.layers.1.self_attn.o_proj",
            },
        ),
    ],
)
def test_each_named_site_is_the_module_its_name_says(
    context_for: Callable[[str], SteeringContext], model: str, expected: dict[str, str]
) -> None:
    context = context_for(model)
    found = {}
    for site in expected:
        heads = Heads("0") if site == "head-input" else None
        path = context.architecture.layers_path
        [entry] = resolve_sites(
            context.loaded.model, path, (1,), Site.parse(site), heads, context.encode("The weather")
        )
        found[site] = entry.full_path
    assert found == expected


def test_an_nnsight_arm_that_edits_the_block_output_instead_of_the_site_fails(
    context_for: Callable[[str], SteeringContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(NnsightSteering, "site_tensor", lambda self, block, _site: self.hidden(block))
    run = spec_run(context_for("tiny-llama"), **SITES["mlp-output"], **OPS["add"], positions="all")
    verdicts = spec_verdicts(run)
    assert verdicts["arms_agree"][0] == "FAIL"


def test_the_hook_edits_only_the_chosen_heads_columns(context_for: Callable[[str], SteeringContext]) -> None:
    context = context_for("tiny-llama")
    resolved = resolved_spec(context, op="add", vector="random:7", scale="6", positions="all", **SITES["head-input"])
    model = context.loaded.model
    seen: list[torch.Tensor] = []
    o_proj = model.model.layers[0].self_attn.o_proj

    def keep(_module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        seen.append(args[0].clone())

    touched: list[Touch] = []
    passes: list[PassShape] = []
    with torch.no_grad():
        for steered in (False, True):  # a pre-hook registered after the site's sees what the site's hook made
            with spec_hooks(model, resolved, True, touched, passes) if steered else nullcontext():
                handle = o_proj.register_forward_pre_hook(keep)
                try:
                    model(input_ids=resolved.batch.input_ids)
                finally:
                    handle.remove()
    moved = (seen[1] - seen[0])[0]  # [seq, 64]: 4 heads of 16
    vector = resolved.vector_for(0)
    assert vector is not None and vector.shape == (32,)  # heads 0 and 2: 2 x 16 columns
    assert torch.allclose(moved[:, 0:16], 6 * vector[:16].expand(moved.shape[0], 16), atol=1e-6)
    assert torch.allclose(moved[:, 32:48], 6 * vector[16:].expand(moved.shape[0], 16), atol=1e-6)
    assert torch.equal(moved[:, 16:32], torch.zeros_like(moved[:, 16:32]))  # heads 1 and 3 untouched
    assert torch.equal(moved[:, 48:64], torch.zeros_like(moved[:, 48:64]))


@pytest.fixture(scope="module")
def bloom() -> BloomForCausalLM:
    torch.manual_seed(0)
    return BloomForCausalLM(BloomConfig(n_layer=2, hidden_size=64, n_head=4, vocab_size=1024)).eval()


@pytest.mark.parametrize("site", ["attention-output", "mlp-output"])
def test_bloom_sub_layer_outputs_are_detected_as_residual_added(bloom: BloomForCausalLM, site: str) -> None:
    path, _ = find_decoder_layers(bloom)
    [found] = resolve_sites(bloom, path, (1,), Site.parse(site), None, torch.tensor([[5, 6, 7, 8]]))
    assert found.residual_added and found.carry_ratio is not None and found.carry_ratio < 0.01


@pytest.mark.parametrize("site", ["attention-output", "mlp-output"])
@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama"])
def test_gpt2_and_llama_sub_layer_outputs_are_their_own_contribution(
    context_for: Callable[[str], SteeringContext], model: str, site: str
) -> None:
    context = context_for(model)
    path = context.architecture.layers_path
    [found] = resolve_sites(context.loaded.model, path, (1,), Site.parse(site), None, context.encode("The weather"))
    assert not found.residual_added and found.carry_ratio is not None and found.carry_ratio > 0.5


def test_a_residual_added_site_fails_the_site_finding_and_says_why(tmp_path: Path) -> None:
    """On a BLOOM model saved as a user's directory: equiv run's site finding fails, naming residual-added."""
    torch.manual_seed(0)
    model = BloomForCausalLM(BloomConfig(n_layer=2, hidden_size=64, n_head=4, vocab_size=1024))
    directory = save_model_dir(model, tmp_path / "bloom")
    target = tmp_path / "out.json"
    argv = ["run", "--model", str(directory), "--op", "zero", "--site", "attention-output", "--layers", "1"]
    assert main([*argv, "--positions", "-1", "--json", str(target), "--no-mlflow"]) == ExitStatus.FINDING_FAILED
    [site] = [finding for finding in json.loads(target.read_text())["findings"] if finding["id"] == "site"]
    assert site["verdict"] == "FAIL" and "attention-output is residual-added on this model" in site["message"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--site", "head-input"], "--site head-input needs --heads"),
        (["--site", "head-input", "--heads", "9"], "head 9 out of range; valid: 0..3"),
        (["--site", "module:mlp.nope"], "has no module 'mlp.nope'; its modules:"),
        (["--site", "mlp-output", "--heads", "0"], "--heads with --site mlp-output"),
        (["--site", "residual"], "--site 'residual': valid: block-output, block-input"),
    ],
)
def test_a_bad_site_is_one_line_and_exit_2(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--model", "tiny-llama", "--op", "zero", *arguments, "--no-mlflow"]) == ExitStatus.BAD_INPUT
    [line] = capsys.readouterr().err.strip().splitlines()[-1:]
    assert message in line


def test_heads_resolve_like_python_indices() -> None:
    assert Heads("1:3").resolve(4) == (1, 2) and Heads("-1,0").resolve(4) == (0, 3)


def test_equiv_check_refuses_an_intent_at_another_site(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["check", "examples/steering/hook_every_pass.py:steer", "--model", "tiny-gpt2", "--recipe", "mlp-add"]
    assert main([*argv, "--no-mlflow"]) == ExitStatus.BAD_INPUT
    assert "equiv check observes what the blocks output" in capsys.readouterr().err.strip().splitlines()[-1]
