"""Tensor comparisons: bit-exactness, the measured difference, and the atol/rtol rule they are judged by."""

from __future__ import annotations

import pytest
import torch

from equiv_core.findings.comparison import compare_tensors, rounding_allowance, tensor_sha256


def test_identical_tensors_are_bit_identical_with_zero_difference() -> None:
    values = torch.tensor([1.0, -2.0, 3.5])
    result = compare_tensors(values, values.clone(), atol=0.0, rtol=0.0)
    assert (result.bit_identical, result.max_abs_diff, result.within_tolerance) == (True, 0.0, True)


def test_tolerance_is_atol_plus_rtol_times_the_expected_magnitude() -> None:
    expected = torch.tensor([100.0, 1.0])
    # Allowed differences: 1e-3 + 1e-2 * 100 = 1.001 on the first element, 1e-3 + 1e-2 * 1 = 0.011 on the second.
    inside = compare_tensors(expected + torch.tensor([1.0, 0.0]), expected, atol=1e-3, rtol=1e-2)
    outside = compare_tensors(expected + torch.tensor([0.0, 0.02]), expected, atol=1e-3, rtol=1e-2)
    assert inside.within_tolerance and not inside.bit_identical
    assert inside.max_abs_diff == 1.0
    assert not outside.within_tolerance
    assert abs(outside.max_abs_diff - 0.02) < 1e-6


def test_a_shape_mismatch_is_a_failed_comparison_not_an_exception() -> None:
    result = compare_tensors(torch.zeros(2, 3), torch.zeros(3, 2), atol=1.0, rtol=1.0)
    assert (result.bit_identical, result.within_tolerance, result.max_abs_diff) == (False, False, float("inf"))


def test_sha256_tells_bit_identical_from_nearly_equal() -> None:
    values = torch.tensor([1.0, 2.0])
    assert tensor_sha256(values) == tensor_sha256(values.clone())
    assert tensor_sha256(values) != tensor_sha256(values + 1e-7)


def test_the_rounding_allowance_is_the_floor_scaled_by_magnitude_and_margin() -> None:
    # Steered logits twice as large round twice as coarsely: 4 x 0.01 x 2.
    assert rounding_allowance(0.01, 20.0, 10.0, torch.float32) == pytest.approx(0.08)


def test_the_magnitude_scaling_is_capped() -> None:
    assert rounding_allowance(0.01, 1000.0, 10.0, torch.float32) == pytest.approx(4 * 0.01 * 8)


def test_smaller_steered_logits_do_not_shrink_the_floor() -> None:
    assert rounding_allowance(0.01, 1.0, 10.0, torch.float32) == pytest.approx(0.04)


def test_a_zero_floor_still_allows_the_dtype_rounding_of_the_largest_logit() -> None:
    assert rounding_allowance(0.0, 10.0, 10.0, torch.bfloat16) == pytest.approx(4 * 2 * 10.0 * 2**-7)
