"""``equiv check``: each example of user steering gets the verdict its docstring promises, on both tiny models; the
JSON names; bad input; the Python API and the pytest fixture."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from equiv_core import check_steering
from equiv_core.cli.main import main
from equiv_core.support.errors import UserCodeError, UserInputError

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "steering"
ACTADD_ALL = ("--recipe", "actadd-all")
LAST_PROMPT_TOKEN = ("--op", "add", "--vector", "actadd:I love this|I hate this", "--scale", "4", "--layers", "1")
TWO_LAYERS = ("--op", "add", "--vector", "actadd:I love this|I hate this", "--scale", "4", "--layers", "0,1")
# The examples' verdicts hold on the tiny models (unit tier) and on the real offline model (integration tier).
MODELS = ("tiny-gpt2", "tiny-llama", pytest.param("smollm2-135m", marks=pytest.mark.integration))


def check(tmp_path: Path, example: str, *options: str, model: str = "tiny-llama") -> tuple[int, dict[str, Any]]:
    """Run ``equiv check`` on an example in-process; the exit status and the JSON it wrote."""
    out = tmp_path / "check.json"
    target = f"{EXAMPLES / example}.py:steer"
    code = main(["check", target, *options, "--model", model, "--no-mlflow", "--json", str(out)])
    return code, json.loads(out.read_text()) if out.exists() else {}


def verdicts(payload: dict[str, Any]) -> dict[str, str]:
    return {finding["id"]: finding["verdict"] for finding in payload["findings"]}


def message(payload: dict[str, Any], finding_id: str) -> str:
    return next(str(finding["message"]) for finding in payload["findings"] if finding["id"] == finding_id)


ALL_PASS = {"coverage": "PASS", "matches_reference": "PASS", "steered_differs": "PASS", "hooks_removed": "PASS"}


@pytest.mark.parametrize("model", MODELS)
def test_a_raw_hook_at_every_position_of_every_pass_holds_for_actadd_all(tmp_path: Path, model: str) -> None:
    code, payload = check(tmp_path, "hook_every_pass", *ACTADD_ALL, model=model)
    assert (code, verdicts(payload)) == (0, ALL_PASS)


@pytest.mark.parametrize("model", MODELS)
def test_a_hook_that_returns_early_on_one_position_steers_the_prompt_only(tmp_path: Path, model: str) -> None:
    code, payload = check(tmp_path, "hook_skips_decode", *ACTADD_ALL, model=model)
    assert code == 1
    assert verdicts(payload)["coverage"] == "FAIL"
    assert message(payload, "coverage").startswith("touched step 0 only: generated tokens 1-4 were not steered")


@pytest.mark.parametrize("model", MODELS)
def test_nnsight_iter_at_every_step_holds_for_actadd_all(tmp_path: Path, model: str) -> None:
    code, payload = check(tmp_path, "nnsight_iter", *ACTADD_ALL, model=model)
    assert (code, verdicts(payload)) == (0, ALL_PASS)


@pytest.mark.parametrize("model", MODELS)
def test_an_nnsight_plain_invoke_meant_for_every_token_steers_step_0_only(tmp_path: Path, model: str) -> None:
    code, payload = check(tmp_path, "nnsight_plain_invoke", *ACTADD_ALL, model=model)
    assert code == 1
    assert message(payload, "coverage").startswith("touched step 0 only")


@pytest.mark.parametrize("model", MODELS)
def test_minus_one_inside_iter_meant_for_the_last_prompt_token_touches_the_newest_position(
    tmp_path: Path, model: str
) -> None:
    code, payload = check(tmp_path, "nnsight_last_index", *LAST_PROMPT_TOKEN, "--positions", "-1", model=model)
    assert code == 1
    assert "touched the newest position at steps 1-4" in message(payload, "coverage")
    assert "which the spec does not steer" in message(payload, "coverage")


@pytest.mark.parametrize("model", MODELS)
def test_a_hook_never_removed_fails_hooks_removed_only(tmp_path: Path, model: str) -> None:
    code, payload = check(tmp_path, "hook_never_removed", *ACTADD_ALL, model=model)
    assert code == 1
    assert verdicts(payload) == {**ALL_PASS, "hooks_removed": "FAIL"}
    assert "1 forward hook left registered on" in message(payload, "hooks_removed")


@pytest.mark.parametrize("model", MODELS)
def test_steering_at_two_blocks_and_an_attention_projection_touches_exactly_those_blocks(
    tmp_path: Path, model: str
) -> None:
    _code, payload = check(tmp_path, "two_layers_and_attention", *TWO_LAYERS, "--positions", "all", model=model)
    user = next(f for f in payload["findings"] if f["id"] == "coverage")["evidence"]["arms"]["user"]
    assert {layer for _step, layer, _position, _row in user["touched"]} == {0, 1}
    assert verdicts(payload)["coverage"] == "PASS"
    assert verdicts(payload)["matches_reference"] == "FAIL"  # an attention-site edit is not a block-output edit


@pytest.mark.parametrize("model", MODELS)
def test_a_hook_that_ignores_the_attention_mask_is_reported_touching_pad_positions(tmp_path: Path, model: str) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The weather today is\nHi\n")
    code, payload = check(tmp_path, "hook_every_pass", *ACTADD_ALL, "--prompts", str(prompts), model=model)
    assert code == 1
    assert re.search(
        r"touched pad positions, which hold no token \(row 1 columns 0-\d+ at step 0 \(layer 1\)\)",
        message(payload, "coverage"),
    )
    assert verdicts(payload)["matches_reference"] == "PASS"  # the mask hides the pads from every other position


def test_the_json_has_the_users_arm_with_touched_and_generated_ids(tmp_path: Path) -> None:
    _code, payload = check(tmp_path, "hook_every_pass", *ACTADD_ALL)
    user = payload["findings"][0]["evidence"]["arms"]["user"]
    assert user["touched"][:2] == [[0, 1, 0, 0], [0, 1, 1, 0]]
    assert len(user["generated_ids"]) == 5
    assert payload["checked"].endswith("hook_every_pass.py:steer (hooks form)")
    assert payload["config"]["check"]["target"].endswith("hook_every_pass.py:steer")


def test_two_identical_checks_give_the_same_fingerprint(tmp_path: Path) -> None:
    first = check(tmp_path, "nnsight_iter", *ACTADD_ALL)[1]["fingerprint"]
    assert check(tmp_path, "nnsight_iter", *ACTADD_ALL)[1]["fingerprint"] == first


# Bad input: one line of ours, exit 2 (1 when the user's steering raises while generating), the user's own lines.


def _write(tmp_path: Path, source: str) -> str:
    path = tmp_path / "mine.py"
    path.write_text(source)
    return str(path)


def _run(target: str, capsys: pytest.CaptureFixture[str], *options: str) -> tuple[int, list[str]]:
    code = main(["check", target, *ACTADD_ALL, "--model", "tiny-llama", "--no-mlflow", *options])
    return code, capsys.readouterr().err.strip().splitlines()


def test_a_missing_file_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = _run(str(tmp_path / "nope.py:steer"), capsys)
    assert (code, len(lines)) == (2, 1)
    assert "no such file" in lines[0]


@pytest.mark.parametrize(
    ("options", "named"),
    [(("--steps", "every"), "--steps: equiv run's"), (("--layer", "1", "--position", "2"), "--layer and --position:")],
)
def test_run_options_for_its_own_arms_are_refused_in_one_line(
    capsys: pytest.CaptureFixture[str], options: tuple[str, ...], named: str
) -> None:
    code, lines = _run(str(EXAMPLES / "actadd.py:steer"), capsys, *options)
    assert (code, len(lines)) == (2, 1)
    assert named in lines[0] and "equiv check runs your code instead" in lines[0]


def test_a_missing_name_lists_the_callables_the_file_defines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = _run(_write(tmp_path, "def steer_me(model):\n    pass\n") + ":steer", capsys)
    assert code == 2
    assert lines[-1].endswith(
        "'steer' is not defined there; callables defined in " + str(tmp_path / "mine.py") + ": steer_me"
    )


def test_a_file_that_raises_on_import_shows_the_users_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines = _run(_write(tmp_path, "x = 1\nraise RuntimeError('boom')\n") + ":steer", capsys)
    assert code == 2
    assert lines[0].endswith("mine.py raised on import: RuntimeError: boom")
    assert any('mine.py", line 2' in line for line in lines[1:])


def test_a_file_that_exits_on_import_is_one_line_of_ours(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = _run(_write(tmp_path, "import sys\nsys.exit('usage: mine.py ARG')\n") + ":steer", capsys)
    assert code == 2
    assert lines[0].endswith(
        "mine.py raised on import: SystemExit: usage: mine.py ARG (a script's argument parsing at import?)"
    )


def test_a_signature_of_neither_form_names_both(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = _run(_write(tmp_path, "def steer(a, b, c):\n    pass\n") + ":steer", capsys)
    assert (code, len(lines)) == (2, 1)
    assert "fits neither form; hooks form: steer(model)" in lines[0]
    assert "generate form: steer(model, tokenizer, input_ids" in lines[0]


def test_steering_that_raises_while_generating_exits_1_with_the_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = (
        "from contextlib import contextmanager\n"
        "@contextmanager\n"
        "def steer(model):\n"
        "    def hook(module, args, output):\n"
        "        if output.shape[1] == 1:\n"
        "            raise ValueError('no decode please')\n"
        "    handle = model.model.layers[0].register_forward_hook(hook)\n"
        "    try:\n"
        "        yield\n"
        "    finally:\n"
        "        handle.remove()\n"
    )
    code, lines = _run(_write(tmp_path, source) + ":steer", capsys)
    assert code == 1
    ours = next(line for line in lines if "raised at" in line)
    assert ours.endswith("raised at step 1 (decode): ValueError: no decode please")
    assert any('mine.py", line 6, in hook' in line for line in lines)


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        ("input_ids", "returned 0 new tokens per row; asked for 5"),
        ("torch.zeros(input_ids.shape[0], 5, dtype=torch.long)", "returned only the new tokens [1, 5]"),
        ("torch.zeros(1, 9)", "returned a torch.float32 tensor of shape (1, 9)"),
        ("'ids'", "returned str; the generate form returns token ids"),
    ],
)
def test_a_generate_form_returning_the_wrong_thing_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], returned: str, expected: str
) -> None:
    source = (
        "import torch\n"
        "def steer(model, tokenizer, input_ids, attention_mask, max_new_tokens, generation_kwargs):\n"
        f"    return {returned}\n"
    )
    code, lines = _run(_write(tmp_path, source) + ":steer", capsys)
    assert code == 2
    assert expected in lines[-1]


def test_steering_that_removes_hooks_it_did_not_register_is_named_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = (  # what pyvene 0.1.8's generate does (bench/CONFORMANCE-FINDINGS.md)
        "def steer(model, tokenizer, input_ids, attention_mask, max_new_tokens, generation_kwargs):\n"
        "    for module in model.modules():\n"
        "        module._forward_hooks.clear()\n"
        "        module._forward_pre_hooks.clear()\n"
        "    return model.generate(input_ids=input_ids, attention_mask=attention_mask,\n"
        "                          max_new_tokens=max_new_tokens, **generation_kwargs)\n"
    )
    code, lines = _run(_write(tmp_path, source) + ":steer", capsys)
    assert code == 2
    assert "removed hooks it did not register from the model while it ran" in lines[-1]


def test_check_without_an_intent_is_refused_before_any_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["check", f"{EXAMPLES / 'hook_every_pass'}.py:steer", "--model", "tiny-llama", "--no-mlflow"])
    assert code == 2
    assert "equiv check needs the intent" in capsys.readouterr().err


# The Python API and the pytest fixture.


def _adding_at_every_position(vector_scale: float) -> Any:
    @contextmanager
    def steer(model: nn.Module) -> Iterator[None]:
        handle = model.model.layers[1].register_forward_hook(lambda _m, _a, out: out + vector_scale)
        try:
            yield
        finally:
            handle.remove()

    return steer


def test_check_steering_takes_the_function_itself_and_shows_the_grid() -> None:
    intent = {"op": "add", "vector": "random:1", "scale": "1", "layers": "1", "positions": "all"}
    result = check_steering(_adding_at_every_position(3.0), intent, model="tiny-llama")
    assert not result.holds  # adds 3 to every coordinate, not the random unit vector: touches right, output not
    assert result.finding("coverage").verdict == "PASS"
    assert result.finding("matches_reference").verdict == "FAIL"
    assert "step 4" in result.grid() and "<pre>" in result._repr_html_()
    assert result.touched()[0] == [0, 1, 0, 0]
    assert result.report.checked == f"{__file__}:_adding_at_every_position.<locals>.steer (hooks form)"


def test_check_steering_refuses_a_function_of_no_form() -> None:
    with pytest.raises(UserCodeError, match="fits neither form"):
        check_steering(lambda a, b, c: None, "actadd-all", model="tiny-llama")


def test_check_steering_refuses_an_unknown_attention_kernel_before_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    import equiv_core.findings.runner as runner

    monkeypatch.setattr(runner, "prepare_run", lambda *args, **kwargs: pytest.fail("loaded a model"))
    with pytest.raises(UserInputError, match=r"--attn-implementation 'flash': valid: eager, sdpa"):
        check_steering(_adding_at_every_position(3.0), "actadd-all", model="tiny-llama", attn_implementation="flash")


def test_the_pytest_fixture_fails_a_test_with_the_grid(steering_check: Any) -> None:
    @contextmanager
    def prompt_only(model: nn.Module) -> Iterator[None]:
        def hook(_module: nn.Module, _args: Any, output: torch.Tensor) -> torch.Tensor | None:
            return None if output.shape[1] == 1 else output + 1.0

        handle = model.model.layers[1].register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    intent = {"op": "add", "vector": "random:1", "scale": "1", "layers": "1", "positions": "all"}
    with pytest.raises(pytest.fail.Exception, match="touched step 0 only") as failure:
        steering_check(prompt_only, intent, model="tiny-llama")
    assert "step 4" in str(failure.value)


def test_only_coverage_generates_nothing_besides_the_users_steering(tmp_path: Path) -> None:
    code, payload = check(tmp_path, "hook_every_pass", *ACTADD_ALL, "--only", "coverage")
    assert code == 0
    assert list(payload["findings"][0]["evidence"]["arms"]) == ["user"]
    cost = payload["check_cost"]
    assert (cost["unsteered_s"], cost["reference_s"], cost["after_s"], cost["floor_s"]) == (0.0, 0.0, 0.0, 0.0)
    assert cost["observer_bytes"] > 0


def test_the_pytest_fixture_returns_the_result_when_every_finding_holds(steering_check: Any) -> None:
    @contextmanager
    def random_direction(model: nn.Module) -> Iterator[None]:
        from equiv_core.arms.vectors import random_unit_vector

        vector = random_unit_vector(1, model.config.hidden_size)
        handle = model.model.layers[1].register_forward_hook(lambda _m, _a, out: out + vector)
        try:
            yield
        finally:
            handle.remove()

    intent = {"op": "add", "vector": "random:1", "scale": "1", "layers": "1", "positions": "all"}
    result = steering_check(random_direction, intent, model="tiny-llama")
    assert result.holds and result.finding("matches_reference").message.endswith("logits bit-identical")


def test_a_block_swapped_for_a_wrapper_is_observed_at_its_layer_and_must_be_put_back() -> None:
    """repeng's ControlModel replaces decoder blocks with wrappers that add a vector; the observer, built on the
    original blocks before the steering is entered, still sees the change at that layer."""

    class Added(nn.Module):
        def __init__(self, block: nn.Module, vector: torch.Tensor) -> None:
            super().__init__()
            self.block, self.vector = block, vector

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            return self.block(*args, **kwargs) + self.vector

    def swapping(put_back: bool) -> Any:
        @contextmanager
        def steer(model: nn.Module) -> Iterator[None]:
            from equiv_core.arms.vectors import random_unit_vector

            layers = model.model.layers
            original = layers[1]
            layers[1] = Added(original, random_unit_vector(1, model.config.hidden_size))
            try:
                yield
            finally:
                if put_back:
                    layers[1] = original

        return steer

    intent = {"op": "add", "vector": "random:1", "scale": "1", "layers": "1", "positions": "all"}
    assert check_steering(swapping(True), intent, model="tiny-llama").holds
    left = check_steering(swapping(False), intent, model="tiny-llama").finding("hooks_removed")
    assert left.verdict == "FAIL" and "module model.layers.1 was replaced and not put back" in left.message


def test_a_word_given_to_the_studys_position_points_at_positions(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(["check", f"{EXAMPLES / 'hook_every_pass'}.py:steer", "--recipe", "actadd-all", "--position", "all"]) == 2
    )
    assert "a steering spec's positions are given with --positions" in capsys.readouterr().err


def test_check_result_repr_is_one_line_of_verdicts() -> None:
    intent = {"op": "add", "vector": "random:1", "scale": "1", "layers": "1", "positions": "all"}
    shown = repr(check_steering(_adding_at_every_position(3.0), intent, model="tiny-llama"))
    assert "\n" not in shown and shown.endswith(
        "coverage: PASS, matches_reference: FAIL, steered_differs: PASS, hooks_removed: PASS)"
    )
