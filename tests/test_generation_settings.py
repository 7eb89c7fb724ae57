"""Real generation settings on tiny models: padded batches (left and right), special tokens and chat templates,
sampling, generation that stops at EOS; and the arms that get them wrong."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from spec_helpers import spec_run, spec_verdicts
from tokenizers.processors import TemplateProcessing

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.nnsight import NnsightSteering
from equiv_core.arms.resolved import ResolvedSpec
from equiv_core.cli.main import main
from equiv_core.config.decoding import Decoding
from equiv_core.findings.spec.registered import SPEC_FINDINGS
from equiv_core.findings.spec.spec_finding import SpecFindingConfig
from equiv_core.findings.spec.spec_run import SpecRun
from equiv_core.models.inputs import default_bos_note, encode_prompts
from equiv_core.models.offline_tokenizer import offline_tokenizer

PROMPTS = ("The weather today is", "The weather", "It is a good day. It was a bad day.")
ADD = {"op": "add", "vector": "random:5", "scale": "8", "positions": "last+generated"}
ZERO = {"op": "zero", "positions": "-1"}


def _run(context: SteeringContext, prompts: tuple[str, ...] = PROMPTS, padding: str = "left", **how: object) -> SpecRun:
    """The spec run of these tests: a batch of PROMPTS, left-padded, 6 new tokens unless told."""
    return spec_run(context, prompts=prompts, padding=padding, **how)


_verdicts = spec_verdicts


def test_left_padding_puts_each_row_after_its_pads() -> None:
    tokenizer = offline_tokenizer(1024)
    batch = encode_prompts(tokenizer, PROMPTS, torch.device("cpu"), "left")
    assert batch.lengths == (4, 2, 12) and batch.padded_length == 12
    assert (batch.pad(1), batch.column(1, 0), batch.column(1, 1), batch.column(1, 2)) == (10, 10, 11, 12)
    assert batch.position_of(1, 9) is None and batch.position_of(1, 13) == 3
    assert batch.attention_mask[1].tolist() == [0] * 10 + [1, 1]


def test_right_padding_keeps_rows_at_column_0() -> None:
    batch = encode_prompts(offline_tokenizer(1024), PROMPTS, torch.device("cpu"), "right")
    assert (batch.pad(1), batch.column(1, 1), batch.column(1, 2)) == (0, 1, 12)
    assert batch.position_of(1, 11) is None  # the last column is a pad token of row 1


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama"])
@pytest.mark.parametrize("options", [ZERO, ADD], ids=["zero", "add"])
def test_left_padded_batches_hold_every_finding(
    context_for: Callable[[str], SteeringContext], model: str, options: dict[str, str]
) -> None:
    """Absolute positions (GPT-2) and rotary ones (Llama): real masks and per-row positions keep each row what it
    is alone, in every arm, one batched invoke or one invoke per prompt."""
    run = _run(context_for(model), **options)
    assert set(run.arms) >= {"iter", "iter_per_invoke"}
    verdicts = _verdicts(run)
    assert {name: verdict for name, (verdict, _m) in verdicts.items()} == dict.fromkeys(verdicts, "PASS"), verdicts
    config = SpecFindingConfig(PROMPTS, 6, run.resolved.spec)
    evidence = SPEC_FINDINGS.get("batch_invariance").judge(run, config).evidence.to_dict()
    assert evidence["comparable_rows"] == [0, 1, 2]  # the padded rows 0 and 1 were judged, not skipped


@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama"])
@pytest.mark.parametrize("options", [ZERO, ADD], ids=["zero", "add"])
def test_right_padding_judges_only_the_unpadded_row_and_names_the_pitfall(
    context_for: Callable[[str], SteeringContext], model: str, options: dict[str, str]
) -> None:
    """With right padding generate continues shorter rows from a pad token: unsteered already differs there, so the
    padded rows are left out (named, with the pitfall) and only the unpadded row is judged."""
    run = _run(context_for(model), padding="right", **options)
    verdict, message = _verdicts(run)["batch_invariance"]
    assert verdict == "PASS"
    assert message.startswith("every arm gives each prompt's ids alone, in rows 2 (rows 0, 1 not judged")
    assert "no judged row was padded: this tested batching, not padding" in message
    assert "the last column (11) is a pad token for rows 0, 1" in message


def test_a_batch_that_needs_no_padding_is_judged(context_for: Callable[[str], SteeringContext]) -> None:
    """Three copies of one prompt: nothing is padded, and every row is still compared with the prompt alone."""
    verdict, message = _verdicts(_run(context_for("tiny-gpt2"), prompts=(PROMPTS[0],) * 3, **ZERO))["batch_invariance"]
    assert (verdict, message) == (
        "PASS",
        "every arm gives each prompt's ids alone, in rows 0, 1, 2; no judged row was padded: this tested batching, "
        "not padding",
    )


def test_a_problem_in_an_unpadded_batch_is_a_fail_not_hidden(
    context_for: Callable[[str], SteeringContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An arm whose row 1 changes only when batched: with no padded row the finding used to say NOT APPLICABLE and
    exit 0; a problem in a judged row is a FAIL."""
    original = NnsightSteering.generate_spec

    def batch_dependent(self: NnsightSteering, resolved: ResolvedSpec, style: Any, per_invoke: bool = False) -> Any:
        generation = original(self, resolved, style, per_invoke)
        if style != "iter" or per_invoke or resolved.batch.size == 1:
            return generation
        rows = list(generation.rows)
        first, *rest = rows[1].generated_ids
        rows[1] = dataclasses.replace(rows[1], generated_ids=(first + 1, *rest))
        return dataclasses.replace(generation, rows=tuple(rows))

    monkeypatch.setattr(NnsightSteering, "generate_spec", batch_dependent)
    verdict, message = _verdicts(_run(context_for("tiny-gpt2"), prompts=(PROMPTS[0],) * 3, **ZERO))["batch_invariance"]
    assert verdict == "FAIL" and message.startswith("iter: row 1 gives [")


def test_an_arm_that_forces_an_all_ones_mask_is_caught(
    context_for: Callable[[str], SteeringContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bug the issue found in this library: a batched steered generate that attends to the pad tokens."""
    original = NnsightSteering.generate_spec

    def ones_mask(self: NnsightSteering, resolved: ResolvedSpec, style: Any, per_invoke: bool = False) -> Any:
        if style == "iter" and not per_invoke:
            batch = dataclasses.replace(resolved.batch, attention_mask=torch.ones_like(resolved.batch.attention_mask))
            resolved = dataclasses.replace(resolved, batch=batch)
        return original(self, resolved, style, per_invoke)

    monkeypatch.setattr(NnsightSteering, "generate_spec", ones_mask)
    verdicts = _verdicts(_run(context_for("tiny-gpt2"), **ZERO))
    assert verdicts["batch_invariance"][0] == "FAIL" and "iter: row 1 gives" in verdicts["batch_invariance"][1]
    assert verdicts["arms_agree"][0] == "FAIL" and "iter: row 1: ids" in verdicts["arms_agree"][1]


def test_a_literal_last_index_on_right_padding_lands_on_a_pad(context_for: Callable[[str], SteeringContext]) -> None:
    run = _run(context_for("tiny-llama"), padding="right", op="zero", positions="-1", steps="0", indexing="literal")
    verdict, message = _verdicts(run)["coverage"]
    assert verdict == "FAIL"
    assert "iter: row 0: index -1 landed on a pad token at steps 0" in message
    assert "iter: row 1: index -1 landed on a pad token at steps 0" in message
    assert "row 2" not in message  # the longest row has no padding


def test_batched_json_has_per_row_ids_for_every_arm(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n\n")  # a trailing blank line is skipped
    target = tmp_path / "out.json"
    argv = ["run", "--model", "tiny-llama", "--prompts", str(prompts), "--max-new-tokens", "4", "--json", str(target)]
    assert main([*argv, "--no-mlflow"]) == 0  # no spec option: the original zeroing edit as a spec
    payload = json.loads(target.read_text())
    assert [finding["id"] for finding in payload["findings"]] == [
        name for name in SPEC_FINDINGS.names() if name != "site"
    ]
    for finding in payload["findings"]:
        rows = finding["evidence"]["rows"]
        assert [row["prompt"] for row in rows] == list(PROMPTS)
        for row in rows:
            assert {"iter", "iter_per_invoke", "hook", "unsteered"} <= set(row["arms"])
            assert all(len(arm["generated_ids"]) == 4 for arm in row["arms"].values())


def test_sampled_arms_draw_the_same_tokens_as_the_hook(context_for: Callable[[str], SteeringContext]) -> None:
    context = context_for("tiny-llama")
    run = _run(context, decoding=Decoding(True, 0.9, 0, 0.95, 7), **ADD)
    greedy = _run(context, **ADD).arms["hook"].rows
    hook = run.arms["hook"].rows
    assert [r.generated_ids for r in hook] != [r.generated_ids for r in greedy]  # it really sampled
    for name in ("iter", "iter_per_invoke", "plain"):
        if run.arms[name].expressible:
            assert [record.generated_ids for record in run.arms[name].rows] == [r.generated_ids for r in hook], name
    verdicts = _verdicts(run)
    assert verdicts["arms_agree"][0] == "PASS"
    assert verdicts["batch_invariance"][0] == "NOT APPLICABLE"  # one draw for the whole batch


def test_one_seed_gives_one_fingerprint_and_two_seeds_two_samples(tmp_path: Path) -> None:
    def sample(seed: int, name: str) -> dict[str, Any]:
        target = tmp_path / name
        argv = ["run", "--model", "tiny-llama", "--recipe", "actadd-all", "--do-sample", "--temperature", "1.5"]
        assert main([*argv, "--seed", str(seed), "--max-new-tokens", "8", "--json", str(target), "--no-mlflow"]) == 0
        return dict(json.loads(target.read_text()))

    first, again, other = sample(1, "a.json"), sample(1, "b.json"), sample(2, "c.json")
    assert first["fingerprint"] == again["fingerprint"]

    def ids(payload: dict[str, Any]) -> list[int]:
        return list(payload["findings"][0]["evidence"]["arms"]["hook"]["generated_ids"])

    assert ids(first) == ids(again) != ids(other)


def test_generation_that_stops_at_eos_is_covered_for_the_steps_it_ran(
    context_for: Callable[[str], SteeringContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Make a token the steered model produces at step 2 the EOS token: every arm stops there, agrees with the
    hook, and no warning about the step loop's unreached steps escapes (warnings are errors in this suite)."""
    context = context_for("tiny-llama")
    steered = _run(context, prompts=(PROMPTS[0],), **ZERO).arms["hook"].rows[0].generated_ids
    stop = next(step for step, token in enumerate(steered) if step >= 2 and token not in steered[:step])
    monkeypatch.setattr(context.loaded.model.generation_config, "eos_token_id", steered[stop])
    run = _run(context, prompts=(PROMPTS[0],), decoding=Decoding(stop_at_eos=True), **ZERO)
    ends = steered[: stop + 1]
    assert all(record.generated_ids == ends for arm in run.expressible_arms() for record in arm.rows)
    assert all(check.steps_run == stop + 1 for arm in run.expressible_arms() for check in arm.coverage)
    verdicts = _verdicts(run)
    assert {name: verdict for name, (verdict, _m) in verdicts.items()} == dict.fromkeys(verdicts, "PASS"), verdicts


def _bos_tokenizer() -> Any:
    """The offline tokenizer made to prepend <|endoftext|> by default, as Llama tokenizers prepend <s>."""
    tokenizer = offline_tokenizer(1024)
    tokenizer._tokenizer.post_processor = TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", 0)]
    )
    return tokenizer


def test_a_tokenizer_that_adds_bos_by_default_is_warned_about() -> None:
    tokenizer = _bos_tokenizer()
    plain = encode_prompts(tokenizer, ("The weather",), torch.device("cpu"))
    assert plain.lengths == (2,) and plain.added == ((),)
    note = default_bos_note(tokenizer, plain)
    assert "the tokenizer adds <|endoftext|> by default" in note and "its positions are 1 higher" in note
    special = encode_prompts(tokenizer, ("The weather",), torch.device("cpu"), add_special_tokens=True)
    assert special.lengths == (3,) and [(t.position, t.token) for t in special.added[0]] == [(0, "<|endoftext|>")]
    assert default_bos_note(tokenizer, special) == ""


def test_a_chat_template_is_applied_and_its_tokens_are_listed() -> None:
    tokenizer = offline_tokenizer(1024)
    tokenizer.chat_template = "{% for m in messages %}User: {{ m['content'] }}\n{% endfor %}Assistant:"
    batch = encode_prompts(tokenizer, ("The weather",), torch.device("cpu"), chat_template=True)
    text = tokenizer.decode(list(batch.row_ids(0)))
    assert text == "User: The weather\nAssistant:"
    own = [position for position in range(batch.lengths[0]) if position not in {t.position for t in batch.added[0]}]
    assert tokenizer.decode([batch.row_ids(0)[position] for position in own]).strip() == "The weather"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--prompts", "EMPTY"], "holds no prompt; give one prompt per line"),
        (["--prompts", "LONG"], "prompt is 300 tokens, too long for this model's context of 256 positions"),
        (["--do-sample", "--temperature", "0"], "--temperature 0: valid: a number > 0"),
        (["--do-sample", "--top-p", "1.5"], "--top-p 1.5: valid: (0, 1]"),
        (["--do-sample", "--top-p", "0"], "--top-p 0: valid: (0, 1]"),
        (["--temperature", "0.7"], "--temperature applies to sampling; give --do-sample too"),
        (["--prompts", "LONG", "--padding", "middle"], "--padding 'middle': valid: left, right"),
        (["--chat-template"], "this model's tokenizer has no chat template"),
        (["--prompts", "MISSING"], "cannot read it: FileNotFoundError"),
    ],
)
def test_bad_generation_settings_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    files = {"EMPTY": "\n\n", "LONG": "The weather\n" + " weather" * 300 + "\n"}
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    arguments = [str(tmp_path / value) if value in (*files, "MISSING") else value for value in arguments]
    assert main(["run", "--model", "tiny-gpt2", *arguments, "--no-mlflow"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert message in error[-1] and "Traceback" not in "\n".join(error)


def test_a_generation_setting_without_a_spec_runs_the_original_edit_as_a_spec(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["run", "--model", "tiny-gpt2", "--do-sample", "--only", "steered_differs", "--no-mlflow"]) == 0
    printed = capsys.readouterr().out
    assert "steering spec findings" in printed and "steering zero at layers 0, positions -1" in printed


def test_the_five_findings_refuse_generation_settings_given_to_the_library() -> None:
    from equiv_core.config.run import RunConfig, validate_config
    from equiv_core.support.errors import UserInputError

    with pytest.raises(UserInputError, match="--do-sample applies to steering specs"):
        validate_config(RunConfig(model="tiny-gpt2", decoding=Decoding(do_sample=True)))


def _eos_at(context: SteeringContext, monkeypatch: pytest.MonkeyPatch, token: int) -> None:
    monkeypatch.setattr(context.loaded.model.generation_config, "eos_token_id", token)


def test_rows_that_stop_at_different_steps_are_each_judged_over_their_own_steps(
    context_for: Callable[[str], SteeringContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    context = context_for("tiny-llama")
    steered = _run(context, **ZERO).arms["hook"].rows
    row, stop = next(
        (row, step)
        for row, record in enumerate(steered)
        for step, token in enumerate(record.generated_ids)
        if step >= 2 and token not in record.generated_ids[:step]
    )
    _eos_at(context, monkeypatch, steered[row].generated_ids[stop])
    run = _run(context, decoding=Decoding(stop_at_eos=True), **ZERO)
    lengths = [len(record.generated_ids) for record in run.arms["hook"].rows]
    assert lengths[row] == stop + 1 and max(lengths) == 6  # this row stopped early, another ran on
    verdicts = _verdicts(run)
    assert {name: verdict for name, (verdict, _m) in verdicts.items()} == dict.fromkeys(verdicts, "PASS"), verdicts


def test_rows_that_end_before_anything_is_steered_are_not_judged(
    context_for: Callable[[str], SteeringContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Steer generated tokens only, and make every row's first token EOS: nothing was ever steered, so nothing can
    pass (the findings are NOT APPLICABLE, saying why)."""
    context = context_for("tiny-gpt2")
    prompts = (PROMPTS[0],)
    first = _run(context, prompts=prompts, **ZERO).unsteered[0].generated_ids[0]
    _eos_at(context, monkeypatch, first)
    options = {"op": "add", "vector": "random:5", "scale": "8", "positions": "generated"}
    run = _run(context, prompts=prompts, decoding=Decoding(stop_at_eos=True), **options)
    assert all(len(record.generated_ids) == 1 for record in run.unsteered)
    verdicts = _verdicts(run)
    for name in ("coverage", "arms_agree", "cache_vs_recompute", "steered_differs"):
        assert verdicts[name] == (
            "NOT APPLICABLE",
            "the prompt ended at EOS before the first intended position, so nothing was steered there",
        ), name


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--prompts", "PROMPTS", "--prompt", "The weather"], "give --prompt or --prompts, not both"),
        (["--padding", "right"], "--padding applies to a batch; give --prompts FILE too"),
        (["--prompts", "MANY"], "65 prompts: valid: at most 64 per run"),
    ],
)
def test_conflicting_batch_options_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], arguments: list[str], message: str
) -> None:
    (tmp_path / "PROMPTS").write_text("The weather\n")
    (tmp_path / "MANY").write_text("The weather\n" * 65)
    arguments = [str(tmp_path / value) if value in ("PROMPTS", "MANY") else value for value in arguments]
    assert main(["run", "--model", "tiny-gpt2", *arguments, "--no-mlflow"]) == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_prompts_file_with_a_byte_order_mark_and_crlf_reads_clean() -> None:
    import tempfile

    from equiv_core.config.run import read_prompts

    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as handle:
        handle.write("\ufeffThe weather\r\n\r\nIt is a good day.\r\n".encode())
    assert read_prompts(handle.name) == ("The weather", "It is a good day.")
