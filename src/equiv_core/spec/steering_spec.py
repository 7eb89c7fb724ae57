"""Steering specs: what a researcher steers (op, vector, scale, layers, positions) and how it is written (steps).

A spec is parsed and checked here without torch or a model, so bad input is one line and exit 2 before any
model work. Its *intent* is the set of absolute token positions to steer, at the given layers, over the whole
generation; its *writing* (``steps``) is how the nnsight step-selector arm selects generation steps. The intent
decides what must be touched; the writing can fall short of it, which is what the ``coverage`` finding reports.

Positions are absolute token positions: ``0 .. n-1`` is the prompt (``n`` tokens); the token generated at
step ``k`` sits at ``n + k`` and is fed back in at step ``k + 1``. With the KV cache, step 0 (the prompt pass,
"prefill") computes positions ``0 .. n-1`` and step ``k >= 1`` ("decode") computes only position ``n + k - 1``;
without the cache every step ``k`` recomputes positions ``0 .. n + k - 1``.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from equiv_core.support.errors import UserInputError

Op = Literal["zero", "add", "set", "ablate", "clamp", "scale"]
OPS: dict[str, str] = {
    "zero": "h = 0 (the original study's edit)",
    "add": "h += scale * v (ActAdd, CAA)",
    "set": "h = v",
    "ablate": "h -= scale * (h . d) d with d = v / |v| (directional ablation; scale 1 removes the component)",
    "clamp": "h += (scale - h . d) d with d = v / |v| (the component along d set to scale, as SAE-feature "
    "clamping does)",
    "scale": "h *= scale",
}
VECTOR_OPS = frozenset({"add", "set", "ablate", "clamp"})
SCALE_OPS = frozenset({"add", "ablate", "clamp", "scale"})
# A scale in multiples of the residual stream's mean norm at the steered layer (``4xnorm``): for add, the added
# vector's norm; for clamp, the value the component is set to. Ablate and scale take plain multipliers.
ScaleUnit = Literal["absolute", "norm"]
NORM_SUFFIX = "xnorm"
NORM_SCALE_OPS = frozenset({"add", "clamp"})

PositionKind = Literal["indices", "prompt", "generated", "last+generated", "all"]
POSITION_KINDS: dict[str, str] = {
    "prompt": "every prompt position 0..n-1 (edited on the prompt pass)",
    "generated": "each generated token as it is fed back in (positions n.., steps 1..); the first generated "
    "token itself is predicted by the unsteered last prompt position",
    "last+generated": "the last prompt position n-1 (whose output predicts the first generated token) and every "
    "generated token: every generated token is predicted from a steered position",
    "all": "every position of every forward pass: the prompt and every generated token",
}
NAMED_POSITIONS: tuple[PositionKind, ...] = ("prompt", "generated", "last+generated", "all")  # POSITION_KINDS' keys
Indexing = Literal["absolute", "literal"]
StepKind = Literal["auto", "prompt-pass", "window", "every"]
NAMED_STEPS: tuple[StepKind, ...] = ("auto", "prompt-pass", "every")  # the step kinds written as a word


def _ascii_int(text: str) -> int:
    """``int`` of ASCII digits with an optional minus (``int`` itself also takes other scripts' digits)."""
    if re.fullmatch(r"\s*-?[0-9]+\s*", text) is None:
        raise ValueError(f"not an integer: {text!r}")
    return int(text)


def _index_parts(text: str, flag: str, forms: str) -> tuple[int | slice, ...]:
    """``A:B`` as one slice, or comma-separated integers; UserInputError naming ``forms`` otherwise."""
    slice_match = re.fullmatch(r"(-?[0-9]+)?:(-?[0-9]+)?", text.strip())
    if slice_match:
        start, stop = (int(part) if part else None for part in slice_match.groups())
        return (slice(start, stop),)
    try:
        return tuple(_ascii_int(part) for part in text.split(","))
    except ValueError:
        raise UserInputError(f"{flag} {text!r}: give {forms} (integers; negatives count from the end)") from None


def _resolve_indices(parts: tuple[int | slice, ...], count: int, flag: str, text: str, noun: str) -> tuple[int, ...]:
    """``parts`` as absolute indices into ``count`` things, in order, without repeats; UserInputError naming the
    valid range for an index outside it or a selection of nothing."""
    chosen: list[int] = []
    for part in parts:
        if isinstance(part, slice):
            chosen += list(range(count))[part]
            continue
        if not -count <= part < count:
            raise UserInputError(f"{noun} {part} out of range; valid: 0..{count - 1} (or {-count}..-1)")
        chosen.append(part % count)
    if not chosen:
        raise UserInputError(f"{flag} {text!r} selects no {noun} of {count}; valid: 0..{count - 1}")
    return tuple(dict.fromkeys(chosen))


@dataclass(frozen=True, slots=True)
class VectorSource:
    """Where the steering vector comes from; resolved against a model by :mod:`equiv_core.arms.vectors`.

    ``file``: a ``.pt``, ``.npy`` or ``.safetensors`` file holding a [hidden] or [n_layers_steered, hidden] tensor;
    ``random``: a seeded random unit vector [hidden]; ``actadd``: the residual stream of prompt A minus prompt B
    at the steered layer, at their last tokens (one [hidden] vector per steered layer).
    """

    kind: Literal["file", "random", "actadd"]
    path: str = ""
    seed: int = 0
    prompts: tuple[str, str] = ("", "")

    @classmethod
    def parse(cls, text: str) -> VectorSource:
        """``random:SEED``, ``actadd:PROMPT_A|PROMPT_B``, or a file path."""
        if text.startswith("random:"):
            seed = text.removeprefix("random:")
            if not re.fullmatch(r"[0-9]+", seed) or int(seed) >= 2**63:
                raise UserInputError(f"--vector {text!r}: give random:SEED with SEED an integer in 0..2**63-1")
            return cls("random", seed=int(seed))
        if text.startswith("actadd:"):
            prompts = text.removeprefix("actadd:").split("|")
            if len(prompts) != 2 or not all(prompt.strip() for prompt in prompts):
                raise UserInputError(
                    f"--vector {text!r}: give actadd:PROMPT_A|PROMPT_B, two non-empty prompts separated by one |"
                )
            return cls("actadd", prompts=(prompts[0], prompts[1]))
        path = Path(text)
        if path.suffix not in (".pt", ".npy", ".safetensors"):
            raise UserInputError(
                f"--vector {text!r}: give a .pt, .npy or .safetensors file, random:SEED or actadd:PROMPT_A|PROMPT_B"
            )
        if not path.is_file():
            raise UserInputError(f"--vector {text!r}: no such file")
        return cls("file", path=str(path))

    def describe(self) -> str:
        if self.kind == "random":
            return f"random:{self.seed}"
        if self.kind == "actadd":
            return f"actadd:{self.prompts[0]}|{self.prompts[1]}"
        return self.path


@dataclass(frozen=True, slots=True)
class Layers:
    """Decoder layers to steer: ``L``, ``L1,L2`` or ``A:B`` (Python slice, ``B`` excluded); negatives as in
    Python."""

    text: str = "0"

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", self.text.strip())
        self._parts()  # syntax is checked at once; the range once the model's depth is known

    def _parts(self) -> tuple[int | slice, ...]:
        return _index_parts(self.text, "--layers", "L, L1,L2 or A:B")

    def resolve(self, num_layers: int) -> tuple[int, ...]:
        """Absolute layer indices, in order, without repeats; UserInputError naming the valid range."""
        return _resolve_indices(self._parts(), num_layers, "--layers", self.text, "layer")


SiteKind = Literal[
    "block-output", "block-input", "attention-output", "mlp-output", "head-input", "module", "module-input"
]
SITES: dict[str, str] = {
    "block-output": "the residual stream after decoder block L (its output; the default)",
    "block-input": "the residual stream entering block L (its input; at block 0, the embeddings)",
    "attention-output": "the output of block L's attention module (its contribution to the residual stream, where "
    "the architecture does not add the residual inside it: the site finding checks)",
    "mlp-output": "the output of block L's MLP (checked the same way)",
    "head-input": "the input of block L's attention output projection (o_proj): the heads' outputs side by side; "
    "--heads picks heads (inference-time intervention edits here)",
    "module:PATH": "the output of the module at PATH under block L (e.g. mlp.act_fn)",
    "module-input:PATH": "the input of the module at PATH under block L",
}
NAMED_SITES: tuple[SiteKind, ...] = ("block-output", "block-input", "attention-output", "mlp-output", "head-input")
_MODULE_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*")


@dataclass(frozen=True, slots=True)
class Site:
    """Which tensor of each steered block is edited (:data:`SITES`); ``path`` (under the block) for module sites.
    Where it is on a given model is found by :mod:`equiv_core.models.sites`."""

    kind: SiteKind = "block-output"
    path: str = ""

    def __post_init__(self) -> None:
        if (self.kind in ("module", "module-input")) != bool(self.path):
            raise UserInputError(f"--site {self.describe()}: a module site names a PATH, the named sites none")

    @classmethod
    def parse(cls, text: str) -> Site:
        text = text.strip()
        if text in NAMED_SITES:
            return cls(text)
        for kind in ("module-input", "module"):
            prefix = f"{kind}:"
            if text.startswith(prefix):
                path = text.removeprefix(prefix)
                if _MODULE_PATH.fullmatch(path) is None:
                    raise UserInputError(
                        f"--site {text!r}: give {prefix}PATH with PATH a dotted module path under the block, like "
                        "mlp.act_fn"
                    )
                return cls(kind, path)
        raise UserInputError(f"--site {text!r}: valid: {', '.join(SITES)}")

    @property
    def is_default(self) -> bool:
        return self.kind == "block-output"

    @property
    def at_residual(self) -> bool:
        """The site is the residual stream itself (a block's output or input), as wide as the hidden size."""
        return self.kind in ("block-output", "block-input")

    @property
    def takes_heads(self) -> bool:
        """``--heads`` may be given: the head site, a module site (the user's layout), and an attention output
        (where the ``site`` finding fails it: its columns are not heads)."""
        return self.kind in ("head-input", "attention-output", "module", "module-input")

    @property
    def reads_input(self) -> bool:
        """The site is a module's input (edited by a forward pre-hook), not its output."""
        return self.kind in ("block-input", "head-input", "module-input")

    def describe(self) -> str:
        return f"{self.kind}:{self.path}" if self.path else self.kind


@dataclass(frozen=True, slots=True)
class Heads:
    """Attention heads to steer at a head site: ``H``, ``H1,H2`` or ``A:B`` (Python slice); negatives as in
    Python."""

    text: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", self.text.strip())
        self._parts()

    def _parts(self) -> tuple[int | slice, ...]:
        return _index_parts(self.text, "--heads", "H, H1,H2 or A:B")

    def resolve(self, num_heads: int) -> tuple[int, ...]:
        """Absolute head indices, ascending, without repeats; UserInputError naming the valid range."""
        return tuple(sorted(_resolve_indices(self._parts(), num_heads, "--heads", self.text, "head")))


@dataclass(frozen=True, slots=True)
class Positions:
    """Which absolute token positions to steer (the intent); see the module docstring for the numbering."""

    kind: PositionKind = "indices"
    indices: tuple[int, ...] = (-1,)  # for kind "indices": >= 0 absolute, < 0 counted from the prompt's end

    @classmethod
    def parse(cls, text: str) -> Positions:
        text = text.strip()
        for kind in NAMED_POSITIONS:
            if text == kind:
                return cls(kind, ())
        try:
            indices = tuple(_ascii_int(part) for part in text.split(","))
        except ValueError:
            raise UserInputError(
                f"--positions {text!r}: give an integer, a list like 0,3, or one of {', '.join(POSITION_KINDS)}"
            ) from None
        return cls("indices", indices)

    def describe(self) -> str:
        return ",".join(str(index) for index in self.indices) if self.kind == "indices" else self.kind

    def resolve(self, prompt_length: int, new_tokens: int) -> tuple[int, ...]:
        """Absolute positions, sorted; UserInputError for a position generation never computes.

        The last position ever computed is ``n + N - 2`` (the token generated at step ``N - 2``, fed back at the
        last step ``N - 1``); the last generated token is never fed back in.
        """
        n, last = prompt_length, prompt_length + new_tokens - 2
        if self.kind == "prompt":
            return tuple(range(n))
        if self.kind in ("generated", "last+generated"):
            generated = tuple(range(n, last + 1))
            if self.kind == "generated" and not generated:
                raise UserInputError(
                    "--positions generated is empty with 1 new token: the first generated token is fed back in "
                    "only at step 1; use --max-new-tokens 2 or more, or last+generated"
                )
            return ((n - 1,) if self.kind == "last+generated" else ()) + generated
        if self.kind == "all":
            return tuple(range(last + 1))
        resolved = []
        for index in self.indices:
            if not -n <= index <= last:
                raise UserInputError(
                    f"position {index} out of range; valid: {-n}..{last} for a {n}-token prompt and "
                    f"{new_tokens} new tokens (negatives count from the prompt's end)"
                )
            resolved.append(index % n if index < 0 else index)
        return tuple(sorted(set(resolved)))


@dataclass(frozen=True, slots=True)
class Steps:
    """How the step-selector arm is written: ``prompt-pass`` (a plain invoke, no selector), ``K`` (``iter[K]``),
    ``K:M`` (``iter[K:M]``, ``M`` excluded), ``K:`` (``iter[K:]``, to the last step), ``every`` (``iter[:N]``), or
    ``auto`` (``iter[0]`` when every intended position is a prompt position, else ``every``)."""

    kind: StepKind = "auto"
    start: int = 0
    stop: int | None = None  # exclusive, for kind "window"; None: to the last step

    @classmethod
    def parse(cls, text: str) -> Steps:
        text = text.strip()
        for kind in NAMED_STEPS:
            if text == kind:
                return cls(kind)
        match = re.fullmatch(r"([0-9]+)(:([0-9]+)?)?", text)
        if match is None:
            raise UserInputError(f"--steps {text!r}: give prompt-pass, K, K:M (0 <= K < M), K: or every")
        start = int(match.group(1))
        stop = start + 1 if match.group(2) is None else None if match.group(3) is None else int(match.group(3))
        if stop is not None and stop <= start:
            raise UserInputError(f"--steps {text!r}: the window K:M needs K < M")
        return cls("window", start, stop)

    def concrete(self, prompt_only: bool) -> Steps:
        """``auto`` made concrete for an intent that is (or is not) prompt positions only."""
        if self.kind != "auto":
            return self
        return Steps("window", 0, 1) if prompt_only else Steps("every")

    def fired(self, new_tokens: int) -> range:
        """The generation steps this writing fires at."""
        if self.kind == "prompt-pass":
            return range(0, 1)
        if self.kind == "window":
            return range(self.start, new_tokens if self.stop is None else min(self.stop, new_tokens))
        return range(new_tokens)

    def describe(self) -> str:
        if self.kind == "window":
            return f"iter[{self.text()}]"
        return {"every": "iter[:N]", "prompt-pass": "prompt-pass (plain invoke)", "auto": "auto"}[self.kind]

    def text(self) -> str:
        """The CLI form (``--steps``)."""
        if self.kind != "window":
            return self.kind
        if self.stop is None:
            return f"{self.start}:"
        return str(self.start) if self.stop == self.start + 1 else f"{self.start}:{self.stop}"


@dataclass(frozen=True, slots=True)
class SteeringSpec:
    """One steering, as a researcher would describe it. Frozen; checked on construction (UserInputError).

    ``scale`` is ``None`` where the op takes none (``zero``, ``set``); for ``add`` and ``ablate`` it defaults
    to 1. A spec whose op leaves ``h`` unchanged (``add`` / ``ablate`` with scale 0, ``scale`` with scale 1) must
    give exactly the unsteered output: :attr:`is_identity`.
    """

    op: Op = "zero"
    vector: VectorSource | None = None
    scale: float | None = None
    scale_unit: ScaleUnit = "absolute"  # "norm": ``scale`` in multiples of the residual norm (``--scale 4xnorm``)
    layers: Layers = field(default_factory=Layers)
    positions: Positions = field(default_factory=Positions)
    steps: Steps = field(default_factory=Steps)
    indexing: Indexing = "absolute"  # literal: integer positions used as indices into each pass, as `h[:, i]`
    site: Site = field(default_factory=Site)
    heads: Heads | None = None  # head sites: the heads whose columns are edited

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise UserInputError(f"--op {self.op!r}: valid: {', '.join(OPS)}")
        if self.op in VECTOR_OPS and self.vector is None:
            raise UserInputError(f"--op {self.op} needs --vector (a file, random:SEED or actadd:PROMPT_A|PROMPT_B)")
        if self.op not in VECTOR_OPS and self.vector is not None:
            raise UserInputError(f"--op {self.op} takes no --vector; ops that do: {', '.join(sorted(VECTOR_OPS))}")
        if self.scale is not None and self.op not in SCALE_OPS:
            raise UserInputError(f"--op {self.op} takes no --scale; ops that do: {', '.join(sorted(SCALE_OPS))}")
        if self.op == "scale" and self.scale is None:
            raise UserInputError("--op scale needs --scale (h *= scale)")
        if self.op == "clamp" and self.scale is None:
            raise UserInputError("--op clamp needs --scale, the value to set the component along v to")
        if self.scale_unit not in ("absolute", "norm"):
            raise UserInputError(f"scale_unit {self.scale_unit!r}: valid: absolute, norm")
        if self.scale_unit == "norm" and self.op not in NORM_SCALE_OPS:
            raise UserInputError(
                f"--scale {self.scale_text()} with --op {self.op}: a scale in multiples of the residual norm applies "
                f"to {' and '.join(sorted(NORM_SCALE_OPS))}; {self.op} takes a plain number"
            )
        if self.scale is not None and not math.isfinite(self.scale):
            raise UserInputError(f"--scale {self.scale}: give a finite number")
        if self.indexing not in ("absolute", "literal"):
            raise UserInputError(f"--indexing {self.indexing!r}: valid: absolute, literal")
        if self.site.kind == "head-input" and self.heads is None:
            raise UserInputError("--site head-input needs --heads (H, H1,H2 or A:B)")
        if self.heads is not None and not self.site.takes_heads:
            raise UserInputError(
                f"--heads with --site {self.site.describe()}: heads are columns of head-input (the attention output "
                "projection's input) or of a module site"
            )
        if self.indexing == "literal" and self.positions.kind != "indices":
            raise UserInputError("--indexing literal applies to integer positions (as written `h[:, i]`)")
        self._check_steps_can_fire()

    def _check_steps_can_fire(self) -> None:
        """Reject a writing that can never touch the intent (model-free part; the rest in :meth:`check_fits`)."""
        kind, steps = self.positions.kind, self.steps
        starts_late = steps.kind == "window" and steps.start > 0
        if kind == "generated" and steps.kind == "prompt-pass":
            raise UserInputError(
                "--positions generated --steps prompt-pass: generated tokens are fed back in from step 1, and a "
                "prompt-pass edit fires only on the prompt pass, so it would never fire"
            )
        if kind == "prompt" and starts_late:
            raise UserInputError(
                f"--positions prompt --steps {steps.text()}: with the KV cache prompt positions are computed only at "
                "step 0, which this window skips, so it would never fire"
            )

    def check_fits(self, prompt_length: int, new_tokens: int, prefix_length: int = 0) -> tuple[int, ...]:
        """Resolve the positions for this prompt and length, and check the writing can reach some of them.

        With absolute indexing, a step selector that fires at none of the steps where the intended positions are
        first computed (with the KV cache) would never edit anything: UserInputError. A selector that reaches
        some of them is accepted, and ``coverage`` reports what it misses. With a cached prefix of
        ``prefix_length`` tokens (prefilled unsteered before generation), the named positions start after it and an
        integer position inside it is refused.
        """
        positions = self.positions.resolve(prompt_length, new_tokens)
        if prefix_length:
            inside = [position for position in positions if position < prefix_length]
            if inside and self.positions.kind == "indices":
                raise UserInputError(
                    f"position {inside[0]} is in the cached prefix (positions 0..{prefix_length - 1}, prefilled once "
                    f"before generation and not steered); valid: {prefix_length}..{prompt_length + new_tokens - 2}"
                )
            positions = tuple(position for position in positions if position >= prefix_length)
        if self.steps.kind == "window" and self.steps.start >= new_tokens:
            raise UserInputError(
                f"--steps {self.steps.text()} starts at step {self.steps.start}; valid steps: 0..{new_tokens - 1} "
                f"with {new_tokens} new tokens"
            )
        if self.indexing == "absolute":
            fired = set(self.steps.concrete(all(p < prompt_length for p in positions)).fired(new_tokens))
            first_steps = {0 if p < prompt_length else p - prompt_length + 1 for p in positions}
            if not fired & first_steps:
                raise UserInputError(
                    f"--positions {self.positions.describe()} --steps {self.steps.text()}: with the KV cache these "
                    f"positions are computed at steps {_step_list(first_steps)}, which the steps never reach"
                )
        return positions

    @property
    def effective_scale(self) -> float:
        """The scale as written (in multiples of the residual norm where :attr:`scale_unit` is ``norm``)."""
        return 1.0 if self.scale is None else self.scale

    def scale_text(self) -> str:
        """The scale as the command line writes it: ``4``, ``4xnorm``."""
        return f"{self.effective_scale:g}" + (NORM_SUFFIX if self.scale_unit == "norm" else "")

    @property
    def is_identity(self) -> bool:
        """True when the op leaves every hidden state unchanged (bit for bit, for finite vectors)."""
        return (self.op in ("add", "ablate") and self.effective_scale == 0.0) or (
            self.op == "scale" and self.effective_scale == 1.0
        )

    def describe(self) -> str:
        """One line: ``add 4 x actadd:Love|Hate at layers 6, positions all, steps iter[:N]``."""
        what: str = self.op
        if self.op in SCALE_OPS:
            what += f" {self.scale_text()}"
        if self.vector is not None:
            what += f" x {self.vector.describe()}" if self.op == "add" else f" {self.vector.describe()}"
        literal = ", literal indices" if self.indexing == "literal" else ""
        site = "" if self.site.is_default else f" {self.site.describe()}"
        heads = "" if self.heads is None else f" heads {self.heads.text}"
        return (
            f"{what} at layers {self.layers.text}{site}{heads}, positions {self.positions.describe()}{literal}, "
            f"steps {self.steps.describe()}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The spec as written (CLI / TOML field names and forms); ``scale_unit``, ``site`` and ``heads`` only where
        they are not the default."""
        return {
            "op": self.op,
            "vector": None if self.vector is None else self.vector.describe(),
            "scale": self.scale,
            **({"scale_unit": self.scale_unit} if self.scale_unit != "absolute" else {}),
            "layers": self.layers.text,
            "positions": self.positions.describe(),
            "steps": self.steps.text(),
            "indexing": self.indexing,
            # Given only where they differ from the default, so a spec written before they existed keeps its JSON
            # and its run fingerprint.
            **({"site": self.site.describe()} if not self.site.is_default else {}),
            **({"heads": self.heads.text} if self.heads is not None else {}),
        }


SPEC_FIELDS = ("op", "vector", "scale", "scale_unit", "layers", "positions", "steps", "indexing", "site", "heads")
LIST_FIELDS = ("layers", "positions", "heads")  # a spec file may give these as TOML lists of integers


def _step_list(steps: set[int]) -> str:
    ordered = sorted(steps)
    return str(ordered) if len(ordered) <= 3 else f"{ordered[0]}..{ordered[-1]}"


def spec_from_options(base: SteeringSpec | None = None, **options: str | float | None) -> SteeringSpec:
    """A spec from CLI-style strings (``None`` leaves ``base``'s value, or the default): one parser for the
    command line, spec files and recipes."""
    unknown = sorted(set(options) - set(SPEC_FIELDS))
    if unknown:
        raise UserInputError(f"unknown spec field {unknown[0]!r}; valid: {', '.join(SPEC_FIELDS)}")
    values: dict[str, Any] = {} if base is None else {f.name: getattr(base, f.name) for f in fields(base)}
    parsers: dict[str, Any] = {
        "op": str,
        "vector": lambda value: VectorSource.parse(str(value)),
        "scale": _scale,
        "scale_unit": str,
        "layers": lambda value: Layers(str(value)),
        "positions": lambda value: Positions.parse(str(value)),
        "steps": lambda value: Steps.parse(str(value)),
        "indexing": str,
        "site": lambda value: Site.parse(str(value)),
        "heads": lambda value: Heads(str(value)),
    }
    for name, value in options.items():
        if value is not None:
            values[name] = parsers[name](value)
    scale = options.get("scale")
    if isinstance(scale, str) and scale.strip().endswith(NORM_SUFFIX):  # "4xnorm": the unit is part of the scale
        if options.get("scale_unit") not in (None, "norm"):
            raise UserInputError(f"--scale {scale!r} is in multiples of the norm; scale_unit says otherwise")
        values["scale_unit"] = "norm"
    elif scale is not None and options.get("scale_unit") is None:
        values["scale_unit"] = "absolute"  # a plain number overrides a base spec's relative scale
    if base is not None and options.get("op") is not None:
        # A base spec (a recipe) with another op: drop the base's vector / scale the new op takes none of, and a
        # relative scale it cannot take (its number meant a multiple of the norm).
        if values["op"] not in VECTOR_OPS and options.get("vector") is None:
            values["vector"] = None
        relative_dropped = values["scale_unit"] == "norm" and values["op"] not in NORM_SCALE_OPS
        if options.get("scale") is None and (values["op"] not in SCALE_OPS or relative_dropped):
            values["scale"] = None
            if options.get("scale_unit") is None:
                values["scale_unit"] = "absolute"
    moved_site = base is not None and options.get("site") is not None and options.get("heads") is None
    if moved_site and not values["site"].takes_heads:
        values["heads"] = None  # a base's heads (a head recipe) moved to a site that has none
    return replace(base, **values) if base is not None else SteeringSpec(**values)


def _scale(value: str | float) -> float:
    """The number of ``--scale``: ``4``, ``-0.5``, or ``4xnorm`` (the unit is read by :func:`spec_from_options`)."""
    if isinstance(value, bool):  # TOML `scale = true` is not a number
        raise UserInputError(f"--scale {value!r}: give a number, or a multiple of the residual norm like 4xnorm")
    text = value.strip().removesuffix(NORM_SUFFIX) if isinstance(value, str) else value
    try:
        scale = float(text)
    except ValueError:
        raise UserInputError(
            f"--scale {value!r}: give a number, or a multiple of the residual norm like 4xnorm"
        ) from None
    return scale


def _joined_ints(where: str, key: str, values: list[Any]) -> str:
    """A TOML list of integers (``layers = [2, 5]``) as the command line writes it (``"2,5"``)."""
    if not values or not all(isinstance(value, int) and not isinstance(value, bool) for value in values):
        raise UserInputError(f"{where}: {key} = {values!r}; a list must hold one or more integers, like [2, 5]")
    return ",".join(str(value) for value in values)


def load_spec_file(path: Path) -> dict[str, str | float]:
    """The fields of a TOML spec file: the same names as the CLI flags (``op = "add"``), at the top level or in a
    ``[steering]`` table, plus ``recipe``. A relative vector path is taken relative to the file.

    Raises UserInputError for a missing, unreadable or invalid file, unknown fields and values of the wrong type.
    """
    where = f"--spec {str(path)!r}"
    if path.suffix != ".toml":
        raise UserInputError(f"{where}: give a .toml file")
    if not path.is_file():
        raise UserInputError(f"{where}: no such file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise UserInputError(f"{where}: cannot read it: {type(error).__name__}") from None
    except tomllib.TOMLDecodeError as error:
        raise UserInputError(f"{where}: not valid TOML: {error}") from None
    table = data["steering"] if set(data) == {"steering"} else data
    if not isinstance(table, dict):
        raise UserInputError(f"{where}: [steering] must be a table of fields")
    allowed = (*SPEC_FIELDS, "recipe")
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise UserInputError(f"{where}: unknown field {unknown[0]!r}; valid: {', '.join(allowed)}")
    fields_: dict[str, str | float] = {}
    for key, value in table.items():
        if key in LIST_FIELDS and isinstance(value, list):
            value = _joined_ints(where, key, value)
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            lists = f" (a list of integers for {' and '.join(LIST_FIELDS)})" if key in LIST_FIELDS else ""
            raise UserInputError(f"{where}: {key} = {value!r}; give a string or a number{lists}")
        fields_[key] = value if key == "scale" else str(value)
    vector = fields_.get("vector")
    if isinstance(vector, str) and not vector.startswith(("random:", "actadd:")) and not Path(vector).is_absolute():
        fields_["vector"] = str(path.parent / vector)
    return fields_
