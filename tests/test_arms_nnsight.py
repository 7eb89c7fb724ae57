"""The nnsight arms (arms/nnsight.py): each timing of an edit does what it says, checked against the raw hook."""

from __future__ import annotations

import warnings

import pytest

from equiv_core.arms.context import SteeringContext
from equiv_core.arms.nnsight import wrap
from equiv_core.arms.steering import Edit

PROMPT = "The weather today is"


def test_plain_invoke_fires_once_on_the_prompt_pass(tiny_context: SteeringContext) -> None:
    input_ids = tiny_context.encode(PROMPT)
    record = tiny_context.nnsight.generate(input_ids, 4, Edit(0, -1), "prompt")
    assert [shape[1] for shape in record.step_shapes] == [input_ids.shape[1]]
    reference = tiny_context.reference(input_ids, 4, Edit(0, input_ids.shape[1] - 1))
    assert record.generated_ids == reference.generated_ids
    assert record.generated_ids != tiny_context.unsteered(input_ids, 4).generated_ids


def test_step0_fires_once(tiny_context: SteeringContext) -> None:
    input_ids = tiny_context.encode(PROMPT)
    record = tiny_context.nnsight.generate(input_ids, 4, Edit(0, input_ids.shape[1] - 1), "step0")
    assert len(record.step_shapes) == 1
    assert record.step_errors == (None,)


def test_every_step_sees_one_position_after_step0_with_cache(tiny_context: SteeringContext) -> None:
    input_ids = tiny_context.encode(PROMPT)
    record = tiny_context.nnsight.generate(input_ids, 4, Edit(0, -1), "every_step")
    assert [shape[1] for shape in record.step_shapes] == [input_ids.shape[1], 1, 1, 1]
    reference = tiny_context.reference(input_ids, 4, Edit(0, -1), "every_step")
    assert record.generated_ids == reference.generated_ids


def test_every_step_without_cache_matches_reference(tiny_context: SteeringContext) -> None:
    input_ids = tiny_context.encode(PROMPT)
    n = input_ids.shape[1]
    edit = Edit(0, n - 1)
    record = tiny_context.nnsight.generate(input_ids, 4, edit, "every_step", use_cache=False)
    assert [shape[1] for shape in record.step_shapes] == [n, n + 1, n + 2, n + 3]
    reference = tiny_context.reference(input_ids, 4, edit, "every_step", use_cache=False)
    assert record.generated_ids == reference.generated_ids


def test_out_of_range_index_raises_unless_caught(tiny_context: SteeringContext) -> None:
    input_ids = tiny_context.encode(PROMPT)
    edit = Edit(0, input_ids.shape[1] - 1)
    with pytest.raises(IndexError, match="out of bounds"):
        tiny_context.nnsight.generate(input_ids, 3, edit, "every_step")
    caught = tiny_context.nnsight.generate(input_ids, 3, edit, "every_step", catch_index_errors=True)
    assert caught.step_errors[0] is None
    assert all(error is not None and "out of bounds" in error for error in caught.step_errors[1:])


def test_forward_logits_match_the_reference_pass(tiny_context: SteeringContext) -> None:
    input_ids = tiny_context.encode(PROMPT)
    edit = Edit(0, 1)
    assert tiny_context.nnsight.forward_logits(input_ids, edit).equal(
        tiny_context.reference_forward_logits(input_ids, edit)
    )


def test_no_deprecation_warnings(tiny_context: SteeringContext) -> None:
    input_ids = tiny_context.encode(PROMPT)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wrap(tiny_context.loaded.model, tiny_context.loaded.tokenizer)
        tiny_context.nnsight.generate(input_ids, 2, Edit(0, -1), "prompt")
        tiny_context.nnsight.generate(input_ids, 2, Edit(0, -1), "step0")
    deprecations = [w for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))]
    assert deprecations == [], [str(w.message) for w in deprecations]


def test_an_nnsight_older_than_the_harness_can_drive_is_refused_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """0.3 and older have another tracing API; 0.4 (graph) and 0.5 onwards (Python on real values) are driven."""
    from packaging.version import Version

    from equiv_core.arms import nnsight as nnsight_arms

    monkeypatch.setattr(nnsight_arms, "NNSIGHT_VERSION", Version("0.3.7"))
    with pytest.raises(nnsight_arms.UnsupportedNnsightVersion, match=r"nnsight 0.3.7 is not supported \(need >= 0.4.0"):
        nnsight_arms.check_supported()
    monkeypatch.setattr(nnsight_arms, "NNSIGHT_VERSION", Version("0.4.0"))
    nnsight_arms.check_supported()


def test_the_graph_arms_read_the_edits_index_error_out_of_nnsight_04s_error() -> None:
    """nnsight 0.4 raises NNsightError (an Exception) carrying the original traceback as text (0.4.11); only the
    edit's own index counts, not another IndexError in nnsight's bookkeeping."""
    from equiv_core.arms.nnsight_graph import _index_error

    class NNsightError(Exception):
        def __init__(self, message: str, traceback_content: str) -> None:
            super().__init__(message)
            self.traceback_content = traceback_content

    ours = NNsightError("x", 'Traceback:\n  File "node.py"\nIndexError: index 3 is out of bounds for dimension 1\n')
    theirs = NNsightError("x", "Traceback:\nIndexError: list index out of range\n")
    other = NNsightError("x", "Traceback:\nRuntimeError: shapes do not match\n")
    assert _index_error(ours, 3) == "IndexError: index 3 is out of bounds for dimension 1"
    assert _index_error(ours, 4) is None
    assert _index_error(theirs, 3) is None
    assert _index_error(other, 3) is None
    assert _index_error(ValueError("no traceback_content"), 3) is None
