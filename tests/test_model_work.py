"""Model work: identical generations made once within a run, copies handed out, every call timed."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
import torch

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.model_work import ModelWork, tensor_key
from equiv_core.arms.steering import Edit
from equiv_core.config.run import RunConfig
from equiv_core.findings.runner import run_findings


def test_within_shared_an_identical_call_runs_once() -> None:
    work, runs = ModelWork(), []
    with work.shared():
        first = work.run(("arm", 1), lambda: runs.append(1) or torch.ones(3))
        second = work.run(("arm", 1), lambda: runs.append(1) or torch.ones(3))
        work.run(("arm", 2), lambda: runs.append(2) or torch.ones(3))
    assert runs == [1, 2]
    assert (work.calls, work.shared_calls) == (2, 1)
    assert torch.equal(first, second)


def test_a_shared_result_is_a_copy_the_caller_may_change() -> None:
    work = ModelWork()
    with work.shared():
        first = work.run("key", lambda: torch.zeros(2))
        first += 5
        assert torch.equal(work.run("key", lambda: torch.zeros(2)), torch.zeros(2))


def test_outside_shared_every_call_runs() -> None:
    """The benchmark's rounds and tests that patch arms between calls must never get an earlier result."""
    work, runs = ModelWork(), []
    for _ in range(3):
        work.run("key", lambda: runs.append(1))
    assert len(runs) == 3 and work.shared_calls == 0


def test_tensor_keys_tell_ids_shapes_and_dtypes_apart() -> None:
    ids = torch.tensor([[1, 2, 3]])
    assert tensor_key(ids) == tensor_key(ids.clone())
    assert len({tensor_key(ids), tensor_key(ids.view(3, 1)), tensor_key(ids.int()), tensor_key(ids + 1)}) == 4


def test_sharing_generations_leaves_every_finding_and_the_fingerprint_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The five findings with identical generations shared, and with every generation made again."""
    shared = run_findings(RunConfig(model="tiny-gpt2"))

    @contextlib.contextmanager
    def no_sharing(self: ModelWork) -> Iterator[ModelWork]:
        yield self

    monkeypatch.setattr(ModelWork, "shared", no_sharing)
    unshared = run_findings(RunConfig(model="tiny-gpt2"))
    assert shared.timings.shared_calls > 0 and unshared.timings.shared_calls == 0
    assert shared.timings.model_calls + shared.timings.shared_calls == unshared.timings.model_calls
    assert shared.fingerprint() == unshared.fingerprint()
    assert shared.all_hold


def test_the_last_position_written_as_minus_1_or_n_minus_1_is_one_reference_on_the_prompt_pass(
    context_for: Callable[[str], SteeringContext],
) -> None:
    """On the prompt pass (the only pass a "prompt" edit fires on) -1 is n-1: one raw-hook generation serves both,
    bit-identical; an every-step edit at -1 (the newest token at each decode step) is another generation."""
    context = context_for("tiny-gpt2")
    input_ids = context.encode("The weather today is")
    n = int(input_ids.shape[1])
    before = context.work.calls
    with context.work.shared():
        minus_one = context.reference(input_ids, 3, Edit(0, -1))
        n_minus_one = context.reference(input_ids, 3, Edit(0, n - 1))
        context.reference(input_ids, 3, Edit(0, -1), when="every_step")
    assert context.work.calls - before == 2
    assert minus_one.generated_ids == n_minus_one.generated_ids
    assert torch.equal(minus_one.step_logits, n_minus_one.step_logits)
