"""The coverage map: intended touches from the spec alone, the words for each kind of gap, the grid."""

from __future__ import annotations

from pathlib import Path

from equiv_core.arms.steering import IndexFault, PassShape, Touch
from equiv_core.findings.coverage_map import CoverageCheck, intended_touches, ranges
from equiv_core.findings.coverage_plot import coverage_figure, coverage_matrix, plot_coverage

N_PROMPT, N_NEW = 4, 8


def _intended(positions: list[int], cached: bool = True) -> frozenset[Touch]:
    return intended_touches(positions, [0], N_PROMPT, N_NEW, cached)


def test_with_the_cache_each_position_is_edited_once_when_first_computed() -> None:
    assert _intended([3, 4, 10]) == {Touch(0, 0, 3), Touch(1, 0, 4), Touch(7, 0, 10)}


def test_without_the_cache_each_position_is_re_edited_at_every_later_step() -> None:
    touches = _intended([3, 9], cached=False)
    assert {t.step for t in touches if t.position == 3} == set(range(8))
    assert {t.step for t in touches if t.position == 9} == {6, 7}


def test_ranges_collapse_consecutive_runs() -> None:
    assert ranges([5, 1, 2, 3, 7]) == "1-3, 5, 7"


def test_a_plain_invoke_meant_for_every_token_is_named() -> None:
    intended = _intended(list(range(11)))
    check = CoverageCheck("iter", True, intended, frozenset(t for t in intended if t.step == 0))
    assert check.problems() == ["touched step 0 only: generated tokens 1-7 were not steered"]


def test_a_window_starting_one_step_late_is_named() -> None:
    intended = _intended(list(range(3, 11)))
    check = CoverageCheck("iter", True, intended, frozenset(t for t in intended if t.step >= 1))
    assert check.problems() == ["started at step 1: the first generated token was not steered"]


def test_an_index_out_of_range_is_named_with_its_steps() -> None:
    intended = _intended([3])
    faults = tuple(IndexFault(step, 0, 3, 1) for step in range(1, 5))
    check = CoverageCheck("iter", True, intended, intended, faults)
    assert check.problems() == ["position 3 out of range at steps 1-4"]
    assert not check.matches


def test_touching_nothing_is_steering_not_applied() -> None:
    check = CoverageCheck("iter", True, _intended([3]), frozenset())
    assert check.problems() == ["touched nothing: steering not applied"]


def test_touches_the_spec_does_not_ask_for_are_named() -> None:
    intended = _intended([3])
    extra = frozenset({Touch(0, 0, 1), Touch(0, 0, 2)})
    check = CoverageCheck("iter", True, intended, intended | extra, prompt_length=N_PROMPT)
    assert check.problems() == ["touched positions 1-2 at step 0 (layer 0), which the spec does not steer"]


def test_exact_coverage_has_no_problems() -> None:
    intended = _intended([0, 5])
    assert CoverageCheck("hook", True, intended, intended).problems() == []


def test_the_grid_shows_the_cache_staircase_and_the_gap() -> None:
    intended = intended_touches(range(3, 6), [0], 4, 3, cached=True)
    check = CoverageCheck("iter", True, intended, frozenset(t for t in intended if t.step >= 1))
    assert check.grid(4, 3) == [
        " position 0 1 2 3 | 4 5",
        "   step 0 . . . o |",
        "   step 1         | #",
        "   step 2         |   #",
    ]


def test_a_late_start_that_also_skips_prompt_positions_says_so() -> None:
    intended = _intended(list(range(11)))
    check = CoverageCheck("iter", True, intended, frozenset(t for t in intended if t.step >= 1), prompt_length=4)
    assert check.problems() == [
        "started at step 1: the first generated token was not steered (nor were prompt positions 0-2)"
    ]


def test_touching_the_newest_position_at_every_step_is_named_as_such() -> None:
    intended = _intended([3])
    newest = frozenset(Touch(step, 0, N_PROMPT + step - 1) for step in range(1, N_NEW))
    check = CoverageCheck("iter", True, intended, intended | newest, prompt_length=N_PROMPT)
    assert check.problems() == [
        "touched the newest position at steps 1-7 (positions 4-10, layer 0), which the spec does not steer"
    ]


def test_a_missed_set_that_is_not_a_product_is_described_step_by_step() -> None:
    intended = intended_touches([0, 1], [0, 1], N_PROMPT, N_NEW, cached=True)
    touched = frozenset(t for t in intended if not (t.layer == 1 and t.position == 1))
    touched -= {Touch(0, 0, 0)}
    check = CoverageCheck("iter", True, intended, touched, prompt_length=N_PROMPT)
    assert check.problems() == ["missed position 0 at step 0 (layer 0); position 1 at step 0 (layer 1)"]


def test_a_pass_of_unexpected_length_is_reported() -> None:
    """Touches are placed by assuming the KV cache leaves one position per decode pass; a pass that holds more
    (e.g. a cache that was not used) makes those positions meaningless, and is said so."""
    intended = _intended([3])
    passes = (PassShape(0, 0, 4), PassShape(1, 0, 5))
    check = CoverageCheck("iter", True, intended, intended, (), passes, prompt_length=N_PROMPT)
    assert not check.matches
    assert check.problems() == [
        "step 1 layer 0: the pass held 5 positions, expected 1 (with the KV cache), so its positions cannot be placed"
    ]


def _two_layers() -> dict[str, tuple[CoverageCheck, ...]]:
    """``--layers 2,5`` at the last prompt position: ``hook`` touches both, ``plain`` only layer 2."""
    intended = intended_touches([N_PROMPT - 1], [2, 5], N_PROMPT, N_NEW, cached=True)
    layer_2 = frozenset(touch for touch in intended if touch.layer == 2)
    return {
        "hook": (CoverageCheck("hook", True, intended, intended, prompt_length=N_PROMPT),),
        "plain": (CoverageCheck("plain", True, intended, layer_2, prompt_length=N_PROMPT),),
    }


def test_the_heatmap_of_one_layer_shows_only_that_layers_touches() -> None:
    plain = _two_layers()["plain"][0]
    assert coverage_matrix(plain, N_PROMPT, N_NEW, layer=2)[0, N_PROMPT - 1] == 2  # touched, as intended
    assert coverage_matrix(plain, N_PROMPT, N_NEW, layer=5)[0, N_PROMPT - 1] == 3  # intended, NOT touched


def test_the_heatmap_has_no_out_of_range_column_without_an_out_of_range_index() -> None:
    plain = _two_layers()["plain"][0]
    assert coverage_matrix(plain, N_PROMPT, N_NEW, layer=2).shape == (N_NEW, N_PROMPT + N_NEW - 1)


def test_the_heatmap_marks_an_out_of_range_index_in_a_last_column() -> None:
    intended = _intended([3])
    check = CoverageCheck("iter", True, intended, intended, (IndexFault(1, 0, 3, 1),), prompt_length=N_PROMPT)
    matrix = coverage_matrix(check, N_PROMPT, N_NEW, layer=0)
    assert matrix.shape[1] == N_PROMPT + N_NEW and matrix[1, -1] == 5


def test_the_coverage_plot_draws_one_panel_per_arm_and_steered_layer_with_its_verdict() -> None:
    figure = coverage_figure(_two_layers(), {}, N_NEW, "two layers")
    titles = sorted(axes.get_title().splitlines()[0] for axes in figure.axes)
    assert titles == ["hook, layer 2 [OK]", "hook, layer 5 [OK]", "plain, layer 2 [OK]", "plain, layer 5 [GAP]"]


def test_the_coverage_plot_is_written_as_a_png(tmp_path: Path) -> None:
    path = plot_coverage(_two_layers(), {}, N_NEW, "two layers", tmp_path / "coverage.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_recorded_and_observed_touches_must_agree() -> None:
    intended = frozenset({Touch(0, 1, 3), Touch(1, 1, 4)})
    check = CoverageCheck(
        "iter",
        True,
        intended,
        frozenset({Touch(0, 1, 3), Touch(1, 1, 5)}),
        prompt_length=4,
        recorded=frozenset({Touch(0, 1, 3), Touch(1, 1, 4)}),
    )
    assert not check.matches
    assert "recorded an edit at position 4 at step 1 (layer 1) that changed nothing" in check.problems()
    assert "changed position 5 at step 1 (layer 1) without recording an edit there" in check.problems()


def test_an_unobservable_edit_counts_as_touched_and_is_listed() -> None:
    touch = Touch(0, 1, 3)
    check = CoverageCheck(
        "iter",
        True,
        frozenset({touch}),
        frozenset({touch}),
        prompt_length=4,
        recorded=frozenset({touch}),
        unobservable=frozenset({touch}),
    )
    assert check.matches and check.to_dict()["unobservable"] == [[0, 1, 3, 0]]
