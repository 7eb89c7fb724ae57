"""The built-in catalogue of steering recipes: named specs for what researchers write, and for what they get wrong.

``equiv recipes`` lists them; ``equiv run --recipe NAME`` runs one (other spec options then override its fields).
A *known-wrong* recipe is written the way a public issue thread shows people getting it wrong; the tool must flag
it (its ``flagged_by`` finding, ``coverage`` or ``site``, fails with the message in ``flags``), never pass it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from equiv_core.spec.steering_spec import SteeringSpec, load_spec_file, spec_from_options
from equiv_core.support.errors import UserInputError
from equiv_core.support.registry import Registry

# Contrast pairs: their residual-stream difference is a real direction of the model (a random one is mostly
# ignored by a trained model). The ablation removes the present/past direction of the default prompt's last token.
CONTRAST = "actadd:I love this|I hate this"
TENSE = "actadd:The weather today is|The weather today was"


@dataclass(frozen=True, slots=True)
class Recipe:
    """A named spec, one line saying what it is, where it comes from, and what the tool must flag (if wrong)."""

    name: str
    summary: str
    source: str
    options: tuple[tuple[str, str], ...]  # spec fields as on the command line
    flags: str = ""  # known wrong: the problem the tool must report
    flagged_by: str = "coverage"  # the finding that must fail with ``flags``

    @property
    def known_wrong(self) -> bool:
        return bool(self.flags)

    def spec(self) -> SteeringSpec:
        return spec_from_options(None, **dict(self.options))


RECIPES: Registry[Recipe] = Registry("recipe")
for _recipe in (
    Recipe(
        "original-zero",
        "the original study's edit: zero block 0's output at the last prompt token, written as iter[0]",
        "the original GPT-2 study (README, 'The findings')",
        (("op", "zero"), ("layers", "0"), ("positions", "-1")),
    ),
    Recipe(
        "actadd-all",
        "ActAdd: add 4 x (love - hate) at layer 1, every position of every pass (prompt and generated tokens)",
        "Turner et al. 2023, arXiv:2308.10248 (single-vector form, see equiv_core.arms.vectors)",
        (("op", "add"), ("vector", CONTRAST), ("scale", "4"), ("layers", "1"), ("positions", "all")),
    ),
    Recipe(
        "caa-generated",
        "CAA-style: add 4 x (love - hate) at layer 1 from the last prompt token on, so every generated token is "
        "predicted from a steered position",
        "Rimsky et al. 2024, arXiv:2312.06681; the repo's off-by-one thread (the last prompt position was left out)",
        (("op", "add"), ("vector", CONTRAST), ("scale", "4"), ("layers", "1"), ("positions", "last+generated")),
    ),
    Recipe(
        "ablate-all",
        "directional ablation: remove the ('is' - 'was') direction at every layer and every position",
        "Arditi et al. 2024, arXiv:2406.11717 (refusal direction, ablated at every layer and position)",
        (("op", "ablate"), ("vector", TENSE), ("layers", ":"), ("positions", "all")),
    ),
    Recipe(
        "iti-heads",
        "inference-time intervention: add 4 x (love - hate) to heads 0 and 1 at the input of layer 1's attention "
        "output projection (o_proj), every position",
        "Li et al. 2023, arXiv:2306.03341 (ITI shifts head outputs before the output projection; a contrast "
        "direction stands in for its probe direction)",
        (
            ("op", "add"),
            ("vector", CONTRAST),
            ("scale", "4"),
            ("layers", "1"),
            ("positions", "all"),
            ("site", "head-input"),
            ("heads", "0:2"),
        ),
    ),
    Recipe(
        "mlp-add",
        "add 4 x (love - hate) to layer 1's MLP output, every position",
        "TransformerLens#309, nnsight#479 (steering an MLP's output)",
        (
            ("op", "add"),
            ("vector", CONTRAST),
            ("scale", "4"),
            ("layers", "1"),
            ("positions", "all"),
            ("site", "mlp-output"),
        ),
    ),
    Recipe(
        "wrong-iti-o-proj-output",
        "KNOWN WRONG: ITI on heads 0 and 1 written on the attention output projection's output (the attention "
        "module's output), where the columns are no longer heads",
        "honest_llama#42: the head-wise shift applied after o_proj instead of before it",
        (
            ("op", "add"),
            ("vector", CONTRAST),
            ("scale", "4"),
            ("layers", "1"),
            ("positions", "all"),
            ("site", "attention-output"),
            ("heads", "0:2"),
        ),
        flags="its columns are not heads",
        flagged_by="site",
    ),
    Recipe(
        "wrong-plain-invoke",
        "KNOWN WRONG: ActAdd meant for every token, written as a plain invoke (fires on the prompt pass only)",
        "nnsight issue threads: an intervention with no iter fires once, on the prompt pass",
        (
            ("op", "add"),
            ("vector", CONTRAST),
            ("scale", "4"),
            ("layers", "1"),
            ("positions", "all"),
            ("steps", "prompt-pass"),
        ),
        flags="touched step 0 only",
    ),
    Recipe(
        "wrong-late-window",
        "KNOWN WRONG: CAA on every generated token, written as iter[1:] (the step window starts one step late)",
        "CAA repository thread: the first generated token was not steered",
        (
            ("op", "add"),
            ("vector", CONTRAST),
            ("scale", "4"),
            ("layers", "1"),
            ("positions", "last+generated"),
            ("steps", "1:"),
        ),
        flags="started at step 1",
    ),
    Recipe(
        "wrong-last-index",
        "KNOWN WRONG: steer the last prompt token, written as h[:, -1] inside iter[:] (with the KV cache -1 "
        "becomes the newest token at every step)",
        "steering-vectors / nnsight threads: indices that are relative to each pass under generate",
        (
            ("op", "add"),
            ("vector", CONTRAST),
            ("scale", "4"),
            ("layers", "1"),
            ("positions", "-1"),
            ("steps", "every"),
            ("indexing", "literal"),
        ),
        flags="which the spec does not steer",
    ),
):
    RECIPES.add(_recipe.name, _recipe)


def spec_from_sources(
    recipe: str | None, spec_file: str | None, options: Mapping[str, str | float | None]
) -> SteeringSpec | None:
    """The spec given by a recipe (``--recipe``, or ``recipe = ...`` in the file), a spec file (``--spec``) and
    single options (``--op``, ...; None: not given), each overriding the one before; None when none is given.

    Raises UserInputError for two different recipes, an unknown recipe, a bad spec file or a bad value.
    """
    file_options = load_spec_file(Path(spec_file)) if spec_file is not None else {}
    file_recipe = file_options.pop("recipe", None)
    if recipe is not None and file_recipe is not None and file_recipe != recipe:
        raise UserInputError(f"two recipes: --recipe {recipe} and recipe = {file_recipe!r} in {spec_file}; give one")
    name = recipe if recipe is not None else file_recipe
    if name is None and spec_file is None and all(value is None for value in options.values()):
        return None
    base = RECIPES.get(str(name)).spec() if name is not None else None
    if file_options:
        base = spec_from_options(base, **file_options)
    return spec_from_options(base, **options)
