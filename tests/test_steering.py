"""The steering ops (what an edit does, shared by every arm), checked against their definitions."""

from __future__ import annotations

import pytest
import torch

from equiv_core.arms.steering import apply_op

HIDDEN = torch.tensor([[3.0, 4.0, 0.0], [1.0, -2.0, 2.0]])  # [k, hidden]
VECTOR = torch.tensor([0.0, 2.0, 0.0])


def test_zero_sets_every_value_to_zero() -> None:
    assert torch.equal(apply_op("zero", 1.0, HIDDEN, None), torch.zeros(2, 3))


def test_add_adds_the_scaled_vector_to_every_row() -> None:
    assert torch.equal(apply_op("add", 0.5, HIDDEN, VECTOR), torch.tensor([[3.0, 5.0, 0.0], [1.0, -1.0, 2.0]]))


def test_set_replaces_every_row_with_the_vector() -> None:
    assert torch.equal(apply_op("set", 1.0, HIDDEN, VECTOR), VECTOR.expand(2, 3))


def test_scale_multiplies() -> None:
    assert torch.equal(apply_op("scale", -2.0, HIDDEN, None), -2.0 * HIDDEN)


def test_ablate_removes_the_component_along_the_unit_direction() -> None:
    ablated = apply_op("ablate", 1.0, HIDDEN, VECTOR)
    assert torch.equal(ablated, torch.tensor([[3.0, 0.0, 0.0], [1.0, 0.0, 2.0]]))  # the y component is gone
    assert torch.allclose(ablated @ (VECTOR / VECTOR.norm()), torch.zeros(2))


def test_ablate_with_a_partial_scale_removes_that_share() -> None:
    assert torch.equal(apply_op("ablate", 0.25, HIDDEN, VECTOR), torch.tensor([[3.0, 3.0, 0.0], [1.0, -1.5, 2.0]]))


@pytest.mark.parametrize("value", [0.0, 5.0, -1.5])
def test_clamp_sets_the_component_along_the_unit_direction_and_keeps_the_rest(value: float) -> None:
    clamped = apply_op("clamp", value, HIDDEN, VECTOR)
    assert torch.equal(clamped[:, 1], torch.full((2,), value))  # VECTOR is along y: the y component is the value
    assert torch.equal(clamped[:, [0, 2]], HIDDEN[:, [0, 2]])  # the orthogonal part is untouched


def test_clamp_to_zero_is_a_full_ablation() -> None:
    assert torch.equal(apply_op("clamp", 0.0, HIDDEN, VECTOR), apply_op("ablate", 1.0, HIDDEN, VECTOR))


@pytest.mark.parametrize(("op", "scale"), [("add", 0.0), ("ablate", 0.0), ("scale", 1.0)])
def test_identity_ops_leave_the_values_bit_for_bit(op: str, scale: float) -> None:
    assert torch.equal(apply_op(op, scale, HIDDEN, VECTOR), HIDDEN)


def test_an_op_that_needs_a_vector_refuses_none() -> None:
    with pytest.raises(ValueError, match="op 'add' needs a vector"):
        apply_op("add", 1.0, HIDDEN, None)
