"""Spec arms on tiny models: every op x position kind x step kind against the independent raw hook, and mutated
nnsight arms (prompt only, one step late, nothing, a copy) that the findings must catch."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import torch
from spec_helpers import NEW_TOKENS, PROMPT, resolved_spec, spec_run, spec_verdicts

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.nnsight import NnsightSteering
from equiv_core.arms.resolved import ResolvedSpec
from equiv_core.arms.steering import SpecGeneration
from equiv_core.findings.spec.registered import SPEC_FINDINGS
from equiv_core.findings.spec.spec_finding import SpecFindingConfig
from equiv_core.findings.spec.spec_run import run_spec
from equiv_core.spec.steering_spec import OPS, Steps

VECTOR_OPS = {"add": "6", "set": None, "ablate": "1", "clamp": "3"}


def _resolved(context: SteeringContext, new_tokens: int = NEW_TOKENS, **options: str) -> ResolvedSpec:
    return resolved_spec(context, new_tokens=new_tokens, **options)


_run = spec_run
_verdicts = spec_verdicts


def _op_options(op: str) -> dict[str, str]:
    if op in VECTOR_OPS:
        scale = VECTOR_OPS[op]
        return {"op": op, "vector": "random:11", **({"scale": scale} if scale else {})}
    return {"op": op, **({"scale": "-3"} if op == "scale" else {})}


@pytest.mark.parametrize("op", list(OPS))
@pytest.mark.parametrize("positions", ["-1", "0,2", "prompt", "generated", "last+generated", "all"])
def test_each_op_and_position_kind_agrees_with_the_hook(
    context_for: Callable[[str], SteeringContext], op: str, positions: str
) -> None:
    """Written with iter[:N] (always able to reach the intent), every arm touches what the spec intends and gives
    the hook's ids, cached and recomputed; a plain invoke is written only where it can express the spec."""
    run = _run(context_for("tiny-llama"), **_op_options(op), positions=positions, steps="every", layers="0:2")
    for name, arm in run.arms.items():
        if name == "plain" and not run.resolved.prompt_only:
            assert not arm.expressible and "fires only on the prompt pass" in arm.not_expressible
            continue
        assert arm.covers_intent, (name, [c.problems() for c in arm.coverage] if arm.coverage else arm.not_expressible)
        reference = run.arms["hook" if arm.cached else "hook_recompute"].rows[0]
        assert arm.rows[0].generated_ids == reference.generated_ids, name
        assert torch.allclose(arm.rows[0].step_logits, reference.step_logits, atol=1e-5, rtol=0), name
    # The edit does something (some ops, e.g. ablating a random direction, move logits without changing ids).
    assert not torch.allclose(run.arms["hook"].rows[0].step_logits, run.unsteered[0].step_logits, atol=1e-3)


@pytest.mark.parametrize(
    ("positions", "steps"),
    [("prompt", "prompt-pass"), ("-1", "0"), ("5,6", "2:4"), ("generated", "1:"), ("all", "every")],
)
@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama"])
def test_each_step_selector_that_reaches_the_intent_passes_every_finding(
    context_for: Callable[[str], SteeringContext], model: str, positions: str, steps: str
) -> None:
    run = _run(context_for(model), op="add", vector="random:5", scale="8", positions=positions, steps=steps)
    verdicts = _verdicts(run)
    assert {name: verdict for name, (verdict, _message) in verdicts.items()} == dict.fromkeys(verdicts, "PASS"), (
        verdicts
    )


@pytest.mark.parametrize(("op", "scale"), [("add", "4xnorm"), ("clamp", "2xnorm")])
def test_a_scale_relative_to_the_residual_norm_agrees_with_the_hook(
    context_for: Callable[[str], SteeringContext], op: str, scale: str
) -> None:
    run = _run(context_for("tiny-gpt2"), op=op, vector="random:5", scale=scale, positions="all", layers="0:2")
    verdicts = _verdicts(run)
    assert {name: verdict for name, (verdict, _message) in verdicts.items()} == dict.fromkeys(verdicts, "PASS"), (
        verdicts
    )


def test_scale_zero_gives_exactly_the_unsteered_output(context_for: Callable[[str], SteeringContext]) -> None:
    run = _run(context_for("tiny-gpt2"), op="add", vector="random:5", scale="0", positions="all")
    verdict, message = _verdicts(run)["steered_differs"]
    assert verdict == "PASS"
    assert message.startswith("the spec changes nothing and every arm gives exactly the unsteered output")
    cached = [arm for arm in run.arms.values() if arm.expressible and arm.cached]
    assert all(torch.equal(arm.rows[0].step_logits, run.unsteered[0].step_logits) for arm in cached)


Mutation = Callable[[ResolvedSpec], ResolvedSpec]


@pytest.fixture
def mutate_iter_arm(monkeypatch: pytest.MonkeyPatch) -> Callable[[Mutation], None]:
    """Make the nnsight step-selector arm write the spec differently from what it says (a bug in user code)."""

    def install(mutation: Mutation) -> None:
        original = NnsightSteering.generate_spec

        def mutated(self: NnsightSteering, resolved: ResolvedSpec, style: Any, per_invoke: bool = False) -> Any:
            return original(self, mutation(resolved) if style == "iter" else resolved, style, per_invoke)

        monkeypatch.setattr(NnsightSteering, "generate_spec", mutated)

    return install


@pytest.mark.parametrize(
    ("mutation", "coverage_message"),
    [
        (
            lambda r: dataclasses.replace(r, steps=Steps("prompt-pass")),
            "iter: touched step 0 only: generated tokens 1-5",
        ),
        (lambda r: dataclasses.replace(r, steps=Steps("window", 1)), "iter: started at step 1: the first generated"),
        (lambda r: dataclasses.replace(r, steps=Steps("window", 9, 10)), "iter: touched nothing: steering not applied"),
    ],
    ids=["prompt-only", "one-step-late", "nothing"],
)
def test_a_mutated_arm_fails_coverage_saying_how(
    context_for: Callable[[str], SteeringContext],
    mutate_iter_arm: Callable[[Mutation], None],
    mutation: Mutation,
    coverage_message: str,
) -> None:
    mutate_iter_arm(mutation)
    run = _run(context_for("tiny-llama"), op="add", vector="random:5", scale="8", positions="last+generated")
    verdict, message = _verdicts(run)["coverage"]
    assert verdict == "FAIL"
    assert message.startswith(coverage_message)


def test_an_arm_that_edits_a_copy_is_caught_by_observation_and_by_the_hook(
    context_for: Callable[[str], SteeringContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The arm's code records the right cells, but its edit lands on a copy and changes nothing: the block observer
    sees no change (coverage: every intended edit missed, each recorded one "changed nothing"), and the comparisons
    with the independent hook and with unsteered output fail too."""
    original = NnsightSteering.hidden

    def copy(self: NnsightSteering, block: Any) -> Any:
        return original(self, block).clone()

    monkeypatch.setattr(NnsightSteering, "hidden", copy)
    run = _run(context_for("tiny-gpt2"), op="add", vector="random:5", scale="8", positions="all")
    verdicts = _verdicts(run)
    assert verdicts["coverage"][0] == "FAIL"
    assert "iter: touched nothing: steering not applied" in verdicts["coverage"][1]
    assert "that changed nothing" in verdicts["coverage"][1]
    assert verdicts["arms_agree"][0] == "FAIL"
    assert "no nnsight arm touched what the spec intends" in verdicts["arms_agree"][1]
    assert verdicts["steered_differs"][0] == "FAIL"
    assert "iter: steering not applied" in verdicts["steered_differs"][1]


def test_literal_prompt_index_at_every_step_is_out_of_range_after_step_0(
    context_for: Callable[[str], SteeringContext],
) -> None:
    """Finding 4 as a spec: `h[:, 3]` inside iter[:] is out of range once the cache leaves one position a pass."""
    run = _run(context_for("tiny-gpt2"), op="zero", positions="3", steps="every", indexing="literal")
    verdict, message = _verdicts(run)["coverage"]
    assert verdict == "FAIL"
    assert message == "iter: position 3 out of range at steps 1-5"


def test_the_touches_are_recorded_at_the_step_the_model_ran(
    context_for: Callable[[str], SteeringContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An arm that believes it is one step later than nnsight's loop says is caught: its recorded touches come
    from a pass counter on the model, not from its belief."""
    original = NnsightSteering._spec_firing

    def off_by_one(self: NnsightSteering, *fixed: Any, believed_step: int, **per_firing: Any) -> None:
        original(self, *fixed, believed_step=believed_step + 1, **per_firing)

    monkeypatch.setattr(NnsightSteering, "_spec_firing", off_by_one)
    run = _run(context_for("tiny-gpt2"), op="add", vector="random:5", scale="8", positions="generated")
    # Believing step k+1 at step k: at step 0 it edits the prompt as if it held positions 4-7, and at the last
    # step it looks for a position past the end, so position 8 is never edited.
    assert run.arms["iter"].coverage[0].problems() == [
        "missed position 8 at step 5 (layer 0)",
        "touched positions 0-3 at step 0 (layer 0), which the spec does not steer",
    ]


def test_vectors_from_a_file_give_the_same_ids_as_random_seed(
    context_for: Callable[[str], SteeringContext], tmp_path: Any
) -> None:
    import numpy as np
    from safetensors.torch import save_file

    from equiv_core.arms.vectors import random_unit_vector

    context = context_for("tiny-llama")
    vector = random_unit_vector(9, context.architecture.hidden_size)
    torch.save(vector, tmp_path / "v.pt")
    np.save(tmp_path / "v.npy", vector.numpy())
    save_file({"vector": vector}, str(tmp_path / "v.safetensors"))
    expected = _run(context, op="add", vector="random:9", scale="6", positions="all").arms["iter"].rows[0]
    for name in ("v.pt", "v.npy", "v.safetensors"):
        from_file = _run(context, op="add", vector=str(tmp_path / name), scale="6", positions="all")
        assert from_file.arms["iter"].rows[0].generated_ids == expected.generated_ids, name
        assert torch.equal(from_file.arms["iter"].rows[0].step_logits, expected.step_logits), name


def test_a_vector_file_of_the_wrong_shape_names_the_expected_one(
    context_for: Callable[[str], SteeringContext], tmp_path: Any
) -> None:
    from equiv_core.support.errors import UserInputError

    torch.save(torch.ones(3, 64), tmp_path / "v.pt")
    with pytest.raises(UserInputError, match=r"has shape \[3, 64\]; expected \[64\] or \[2, 64\] for 2 steered layers"):
        _run(context_for("tiny-gpt2"), op="add", vector=str(tmp_path / "v.pt"), layers="0:2", positions="all")


def test_an_integer_vector_file_is_refused(context_for: Callable[[str], SteeringContext], tmp_path: Any) -> None:
    from equiv_core.support.errors import UserInputError

    torch.save(torch.ones(64, dtype=torch.int64), tmp_path / "v.pt")
    with pytest.raises(UserInputError, match="has dtype torch.int64; expected a floating tensor"):
        _run(context_for("tiny-gpt2"), op="add", vector=str(tmp_path / "v.pt"), positions="all")


def test_actadd_is_the_residual_difference_at_the_last_token(context_for: Callable[[str], SteeringContext]) -> None:
    """Checked against nnsight's own read of the block output (an independent way to get the residual stream)."""
    from equiv_core.arms.vectors import resolve_vectors
    from equiv_core.models.sites import resolve_sites
    from equiv_core.spec.steering_spec import Site, VectorSource

    context = context_for("tiny-gpt2")
    sites = resolve_sites(context.loaded.model, "transformer.h", (1,), Site(), None, context.encode("I"))
    vectors = resolve_vectors(VectorSource.parse("actadd:I love this|I hate this"), context, sites)

    def residual(prompt: str) -> torch.Tensor:
        with torch.no_grad(), context.nnsight.wrapped.trace(context.encode(prompt)):
            saved = context.nnsight.wrapped.transformer.h[1].output.save()
        return torch.as_tensor(saved)[0, -1]

    assert torch.allclose(vectors[0], residual("I love this") - residual("I hate this"), atol=1e-6)


def test_nnsight_and_hook_record_the_same_touches_and_pass_lengths(
    context_for: Callable[[str], SteeringContext],
) -> None:
    run = _run(context_for("tiny-gpt2"), op="zero", positions="-1", steps="every")
    nnsight, hook = run.arms["iter"].generation, run.arms["hook"].generation
    assert isinstance(nnsight, SpecGeneration) and isinstance(hook, SpecGeneration)
    assert (
        [touch.to_list() for touch in nnsight.touched] == [touch.to_list() for touch in hook.touched] == [[0, 0, 3, 0]]
    )
    assert [(shape.step, shape.length) for shape in nnsight.passes] == [(0, 4)] + [(step, 1) for step in range(1, 6)]
    assert nnsight.passes == hook.passes


@pytest.fixture
def mutate_recompute_hook(monkeypatch: pytest.MonkeyPatch) -> Callable[[Mutation], None]:
    """Make the raw hook without the KV cache apply a changed spec (the cached hook stays as it is)."""

    def install(mutation: Mutation) -> None:
        import equiv_core.findings.spec.spec_run as spec_run_module

        original = spec_run_module.spec_hook_generate

        def mutated(model: Any, pad: Any, resolved: ResolvedSpec, cached: bool, steer: bool = True) -> SpecGeneration:
            return original(model, pad, resolved if cached or not steer else mutation(resolved), cached, steer)

        monkeypatch.setattr(spec_run_module, "spec_hook_generate", mutated)

    return install


def _one_position_late(resolved: ResolvedSpec) -> ResolvedSpec:
    return dataclasses.replace(resolved, positions=tuple(tuple(p + 1 for p in row) for row in resolved.positions))


def _one_percent_harder(resolved: ResolvedSpec) -> ResolvedSpec:
    return dataclasses.replace(
        resolved, spec=dataclasses.replace(resolved.spec, scale=resolved.spec.effective_scale * 1.01)
    )


@pytest.mark.parametrize(
    ("mutation", "positions"),
    [(_one_position_late, "0,2"), (_one_percent_harder, "all")],
    ids=["edit-one-position-late", "edit-one-percent-harder"],
)
def test_cache_vs_recompute_fails_when_recompute_steers_differently(
    context_for: Callable[[str], SteeringContext],
    mutate_recompute_hook: Callable[[Mutation], None],
    mutation: Mutation,
    positions: str,
) -> None:
    """A recompute edit one position late, or just 1% stronger: logits move far beyond rounding."""
    mutate_recompute_hook(mutation)
    run = _run(context_for("tiny-gpt2"), op="add", vector="random:5", scale="8", positions=positions)
    verdict, message = _verdicts(run)["cache_vs_recompute"]
    assert verdict == "FAIL"
    expected = "did not land on the same positions" if positions != "all" else "so the edits differ in value"
    assert expected in message


def test_cache_vs_recompute_is_not_applicable_with_one_new_token(
    context_for: Callable[[str], SteeringContext],
) -> None:
    context = context_for("tiny-gpt2")
    resolved = _resolved(context, 1, op="add", vector="random:5", scale="8", positions="all")
    run = run_spec(context, resolved)
    config = SpecFindingConfig((PROMPT,), 1, resolved.spec)
    result = SPEC_FINDINGS.get("cache_vs_recompute").judge(run, config)
    assert result.verdict == "NOT APPLICABLE"
    assert result.message == "needs at least 2 steps generated: with 1 the cache is never read"


def test_cache_vs_recompute_cannot_tell_an_edit_smaller_than_rounding(
    context_for: Callable[[str], SteeringContext],
) -> None:
    run = _run(context_for("tiny-gpt2"), op="add", vector="random:5", scale="1e-9", positions="all")
    verdict, message = _verdicts(run)["cache_vs_recompute"]
    assert verdict == "NOT APPLICABLE"
    assert "this check cannot tell them from no steering" in message


def test_non_finite_logits_fail_every_comparison(context_for: Callable[[str], SteeringContext]) -> None:
    """Scaling the residual stream by 1e38 overflows float32: NaN logits must never read as agreement."""
    run = _run(context_for("tiny-gpt2"), op="scale", scale="1e38", positions="all")
    verdicts = _verdicts(run)
    for name in ("arms_agree", "cache_vs_recompute", "steered_differs"):
        assert verdicts[name][0] == "FAIL", name
        assert "logits hold NaN or infinity" in verdicts[name][1], name


def test_an_identity_spec_whose_arm_still_steers_fails(
    context_for: Callable[[str], SteeringContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    import equiv_core.arms.nnsight as nnsight_arms

    original = nnsight_arms.apply_op
    monkeypatch.setattr(
        nnsight_arms, "apply_op", lambda op, scale, selected, vector: original(op, scale + 1, selected, vector)
    )
    run = _run(context_for("tiny-gpt2"), op="add", vector="random:5", scale="0", positions="all")
    verdict, message = _verdicts(run)["steered_differs"]
    assert verdict == "FAIL"
    assert "iter: a spec that changes nothing" in message and "must give exactly the unsteered output" in message


def test_arms_agree_fails_on_logits_alone(
    context_for: Callable[[str], SteeringContext], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An nnsight arm whose edit is off by a hair: same tokens, logits beyond the model's own rounding."""
    import equiv_core.arms.nnsight as nnsight_arms

    original = nnsight_arms.apply_op
    monkeypatch.setattr(
        nnsight_arms, "apply_op", lambda op, scale, selected, vector: original(op, scale * 1.001, selected, vector)
    )
    run = _run(context_for("tiny-gpt2"), op="add", vector="random:5", scale="8", positions="all")
    verdict, message = _verdicts(run)["arms_agree"]
    assert verdict == "FAIL"
    assert message.startswith("iter: logits differ from hook by")
    assert "the same computation under deterministic kernels gives bit-identical logits" in message
