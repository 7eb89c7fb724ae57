"""Steering specs without a model: parsing, resolution of positions/steps/layers, and one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from equiv_core.spec.steering_spec import (
    Layers,
    Positions,
    SteeringSpec,
    Steps,
    VectorSource,
    load_spec_file,
    spec_from_options,
)
from equiv_core.support.errors import UserInputError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-1", (3,)),
        ("0,2", (0, 2)),
        ("5", (5,)),
        ("prompt", (0, 1, 2, 3)),
        ("generated", (4, 5, 6, 7, 8, 9, 10)),
        ("last+generated", (3, 4, 5, 6, 7, 8, 9, 10)),
        ("all", tuple(range(11))),
    ],
)
def test_positions_resolve_to_absolute_token_positions(text: str, expected: tuple[int, ...]) -> None:
    """4-token prompt, 8 new tokens: the last position ever computed is 4 + 8 - 2 = 10 (fed back at step 7)."""
    assert Positions.parse(text).resolve(prompt_length=4, new_tokens=8) == expected


def test_a_position_generation_never_computes_names_the_range() -> None:
    with pytest.raises(UserInputError, match=r"position 11 out of range; valid: -4\.\.10 for a 4-token prompt"):
        Positions.parse("11").resolve(4, 8)


def test_generated_positions_need_two_new_tokens() -> None:
    with pytest.raises(UserInputError, match="--positions generated is empty with 1 new token"):
        Positions.parse("generated").resolve(4, 1)


@pytest.mark.parametrize(
    ("text", "fired", "described"),
    [
        ("prompt-pass", [0], "prompt-pass (plain invoke)"),
        ("3", [3], "iter[3]"),
        ("1:3", [1, 2], "iter[1:3]"),
        ("1:", [1, 2, 3, 4, 5, 6, 7], "iter[1:]"),
        ("every", [0, 1, 2, 3, 4, 5, 6, 7], "iter[:N]"),
    ],
)
def test_steps_fire_where_the_selector_says(text: str, fired: list[int], described: str) -> None:
    steps = Steps.parse(text)
    assert list(steps.fired(8)) == fired
    assert steps.describe() == described
    assert Steps.parse(steps.text()) == steps


def test_auto_steps_are_iter0_for_prompt_positions_and_every_step_otherwise() -> None:
    assert Steps.parse("auto").concrete(prompt_only=True).describe() == "iter[0]"
    assert Steps.parse("auto").concrete(prompt_only=False).describe() == "iter[:N]"


@pytest.mark.parametrize(
    ("text", "expected"), [("0", (0,)), ("-1", (29,)), ("3,1", (3, 1)), ("0:3", (0, 1, 2)), (":", tuple(range(30)))]
)
def test_layers_resolve_like_python_indices(text: str, expected: tuple[int, ...]) -> None:
    assert Layers(text).resolve(30) == expected


def test_a_layer_out_of_range_names_the_valid_range() -> None:
    with pytest.raises(UserInputError, match=r"layer 30 out of range; valid: 0\.\.29 \(or -30\.\.-1\)"):
        Layers("30").resolve(30)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"op": "shift"}, "--op 'shift': valid: zero, add, set, ablate, clamp, scale"),
        ({"op": "clamp", "vector": "random:1"}, "--op clamp needs --scale, the value to set the component"),
        ({"op": "ablate", "vector": "random:1", "scale": "2xnorm"}, "applies to add and clamp; ablate takes a plain"),
        ({"op": "add", "vector": "random:1", "scale": "4xnrm"}, "give a number, or a multiple of the residual norm"),
        ({"op": "add", "vector": "random:1", "scale": "4", "scale_unit": "rms"}, "scale_unit 'rms': valid"),
        ({"op": "add"}, "--op add needs --vector"),
        ({"op": "zero", "vector": "random:1"}, "--op zero takes no --vector"),
        ({"op": "set", "vector": "random:1", "scale": "2"}, "--op set takes no --scale"),
        ({"op": "scale"}, "--op scale needs --scale"),
        ({"op": "add", "vector": "random:1", "scale": "inf"}, "--scale inf: give a finite number"),
        ({"op": "add", "vector": "random:1", "scale": "lots"}, "--scale 'lots': give a number"),
        ({"layers": "1-3"}, "--layers '1-3': give L, L1,L2 or A:B"),
        ({"positions": "last"}, "--positions 'last': give an integer, a list like 0,3, or one of prompt"),
        ({"steps": "3:1"}, "--steps '3:1': the window K:M needs K < M"),
        ({"steps": "always"}, "--steps 'always': give prompt-pass, K, K:M"),
        ({"indexing": "relative"}, "--indexing 'relative': valid: absolute, literal"),
        ({"positions": "all", "indexing": "literal"}, "--indexing literal applies to integer positions"),
        ({"positions": "generated", "steps": "prompt-pass"}, "so it would never fire"),
        ({"positions": "prompt", "steps": "1:4"}, "prompt positions are computed only at step 0"),
        ({"op": "add", "vector": "random:-1"}, "random:SEED with SEED an integer"),
        ({"op": "add", "vector": "actadd:love"}, "give actadd:PROMPT_A|PROMPT_B"),
        ({"op": "add", "vector": "v.csv"}, "give a .pt, .npy or .safetensors file"),
        ({"op": "add", "vector": "missing.pt"}, "--vector 'missing.pt': no such file"),
    ],
)
def test_bad_spec_input_is_one_line(options: dict[str, str], message: str) -> None:
    with pytest.raises(UserInputError) as caught:
        spec_from_options(None, **options)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_steps_that_never_reach_integer_positions_are_rejected_once_the_prompt_is_known() -> None:
    spec = spec_from_options(None, positions="2", steps="3")
    with pytest.raises(UserInputError, match="computed at steps \\[0\\], which the steps never reach"):
        spec.check_fits(prompt_length=4, new_tokens=8)


def test_a_window_past_the_last_step_is_rejected() -> None:
    spec = spec_from_options(None, positions="all", steps="9:12")
    with pytest.raises(UserInputError, match="starts at step 9; valid steps: 0..7"):
        spec.check_fits(prompt_length=4, new_tokens=8)


@pytest.mark.parametrize(
    ("options", "identity"),
    [
        ({"op": "add", "vector": "random:1", "scale": "0"}, True),
        ({"op": "ablate", "vector": "random:1", "scale": "0"}, True),
        ({"op": "scale", "scale": "1"}, True),
        ({"op": "add", "vector": "random:1"}, False),
        ({"op": "scale", "scale": "0"}, False),
        ({"op": "zero"}, False),
    ],
)
def test_identity_specs_are_the_ones_that_change_nothing(options: dict[str, str], identity: bool) -> None:
    assert spec_from_options(None, **options).is_identity is identity


def test_later_options_override_a_base_spec() -> None:
    base = spec_from_options(None, op="add", vector="random:1", scale="4", positions="all")
    changed = spec_from_options(base, scale="0.5", layers="2")
    assert (changed.op, changed.scale, changed.layers.text, changed.positions.kind) == ("add", 0.5, "2", "all")


def test_a_relative_scale_is_its_number_in_the_norm_unit() -> None:
    spec = spec_from_options(None, op="add", vector="random:1", scale="4xnorm")
    assert (spec.scale, spec.scale_unit, spec.describe().split(" at ")[0]) == (4.0, "norm", "add 4xnorm x random:1")
    assert spec_from_options(None, op="add", vector="random:1", scale="4", scale_unit="norm") == spec


def test_a_plain_scale_over_a_relative_base_is_absolute_again() -> None:
    base = spec_from_options(None, op="clamp", vector="random:1", scale="2xnorm")
    assert spec_from_options(base, scale="3").scale_unit == "absolute"


def test_a_site_without_heads_over_a_head_recipe_drops_its_heads() -> None:
    base = spec_from_options(None, op="add", vector="random:1", site="head-input", heads="0:2")
    moved = spec_from_options(base, site="mlp-output")
    assert (moved.site.kind, moved.heads) == ("mlp-output", None)


def test_an_op_that_takes_no_relative_scale_over_a_relative_base_drops_it() -> None:
    base = spec_from_options(None, op="add", vector="random:1", scale="4xnorm")
    ablate = spec_from_options(base, op="ablate")
    assert (ablate.scale, ablate.scale_unit) == (None, "absolute")


def test_a_scale_unit_given_with_an_op_that_takes_none_is_refused() -> None:
    base = spec_from_options(None, op="add", vector="random:1", scale="4")
    with pytest.raises(UserInputError, match="a scale in multiples of the residual norm applies to add and clamp"):
        spec_from_options(base, op="ablate", scale_unit="norm")


def test_a_toml_relative_scale_is_the_flag(tmp_path: Path) -> None:
    path = tmp_path / "steer.toml"
    path.write_text('op = "add"\nvector = "random:3"\nscale = "4xnorm"\n')
    assert spec_from_options(None, **load_spec_file(path)) == spec_from_options(
        None, op="add", vector="random:3", scale="4xnorm"
    )


def test_a_toml_spec_file_gives_the_same_spec_as_the_flags(tmp_path: Path) -> None:
    path = tmp_path / "steer.toml"
    path.write_text('[steering]\nop = "add"\nvector = "random:3"\nscale = 2.5\nlayers = "0:2"\npositions = "all"\n')
    from_file = spec_from_options(None, **load_spec_file(path))
    from_flags = spec_from_options(None, op="add", vector="random:3", scale="2.5", layers="0:2", positions="all")
    assert from_file == from_flags


def test_toml_lists_of_layers_and_positions_mean_what_the_comma_separated_flags_mean(tmp_path: Path) -> None:
    path = tmp_path / "steer.toml"
    path.write_text('op = "zero"\nlayers = [2, 5]\npositions = [0, 3]\n')
    assert spec_from_options(None, **load_spec_file(path)) == spec_from_options(
        None, op="zero", layers="2,5", positions="0,3"
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('op = "add"\ncolour = "red"\n', "unknown field 'colour'"),
        ("op = = 1\n", "not valid TOML"),
        ('layers = ["a", 5]\n', r"layers = \['a', 5\]; a list must hold one or more integers, like \[2, 5\]"),
        ("layers = []\n", "a list must hold one or more integers"),
        ('op = ["add"]\n', "op = \\['add'\\]; give a string or a number$"),
    ],
)
def test_a_bad_spec_file_is_one_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "steer.toml"
    path.write_text(content)
    with pytest.raises(UserInputError, match=message):
        load_spec_file(path)


def test_vector_sources_print_as_they_parse(tmp_path: Path) -> None:
    vector_file = tmp_path / "v.npy"
    vector_file.write_bytes(b"")
    for text in ("random:7", "actadd:I love this|I hate this", str(vector_file)):
        assert VectorSource.parse(text).describe() == text


def test_the_default_spec_is_the_original_zeroing_edit() -> None:
    spec = SteeringSpec()
    assert (spec.op, spec.layers.text, spec.positions.describe(), spec.steps.kind) == ("zero", "0", "-1", "auto")
