"""What ``equiv run`` runs, and the checks of it that need no model: importable without torch, so a bad argument
is answered (one line, exit 2) in well under a second, before torch, nnsight or MLflow load.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NewType

from equiv_core.config.catalog import (
    ATTN_HELP,
    ATTN_IMPLEMENTATIONS,
    BUILTIN_MODEL_INFO,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_MODEL,
    DEFAULT_PROMPT,
    DTYPE_NAMES,
    SPEC_FINDING_IDS,
    STUDY_FINDINGS,
    USER_FINDING_IDS,
    ModelShape,
    known_shape,
)
from equiv_core.config.check import UserTarget
from equiv_core.config.decoding import GENERATION, GREEDY, Decoding
from equiv_core.config.options import DEVICE_HELP, SEED_HELP, option
from equiv_core.config.validation import (
    check_attn_implementation,
    check_device_name,
    check_dtype,
    check_layer,
    check_model_name,
    check_new_tokens,
    check_new_tokens_fit,
    check_prompt,
    check_seed,
)
from equiv_core.spec.steering_spec import SteeringSpec
from equiv_core.spec.vector_files import check_vector_shape, header_shape
from equiv_core.support.errors import UserInputError
from equiv_core.support.registry import check_name

Padding = Literal["left", "right"]  # which side of a batch's shorter rows the pad tokens go
PADDINGS: tuple[Padding, ...] = ("left", "right")


def padding_side(text: str) -> Padding:
    """``text`` as a :data:`Padding`; raises UserInputError naming the valid sides for anything else."""
    for side in PADDINGS:
        if text == side:
            return side
    raise UserInputError(f"--padding {text!r}: valid: {', '.join(PADDINGS)}")


@dataclass(frozen=True, slots=True)
class RunConfig:
    """What ``equiv run`` runs: one model, one prompt, the five findings or one steering spec's findings."""

    model: str = option(DEFAULT_MODEL, "--model", "built-in name (see `equiv models`), directory or hub id")
    device: str = option("auto", "--device", DEVICE_HELP)
    dtype: str = option("float32", "--dtype", "model dtype (default: float32)", choices=DTYPE_NAMES)
    attn_implementation: str | None = option(None, "--attn-implementation", ATTN_HELP, choices=ATTN_IMPLEMENTATIONS)
    prompt: str = option(DEFAULT_PROMPT, "--prompt", f"prompt (default: {DEFAULT_PROMPT!r})", given_only=True)
    max_new_tokens: int = option(DEFAULT_MAX_NEW_TOKENS, "--max-new-tokens", "tokens to generate (>= 1)", parse=int)
    # layer of findings 2-5 (default 0); finding 1 always uses the last layer
    layer: int | None = option(
        None, "--layer", "decoder layer of findings 2-5 (default 0); finding 1 uses the last", parse=int
    )
    position: int = option(
        -1, "--position", "prompt position edited in findings 2, 3, 5 (default -1)", parse=int, given_only=True
    )
    seed: int = option(0, "--seed", SEED_HELP, parse=int)
    experiments: tuple[str, ...] | None = None  # None: every finding of the mode
    spec: SteeringSpec | None = None  # None: the original study's five findings
    prompts: tuple[str, ...] = ()  # a batch (spec mode); empty: ``prompt`` alone
    padding: Padding | None = None  # None: the tokenizer's side (left for nnsight-wrapped models)
    add_special_tokens: bool = option(
        False,
        "--add-special-tokens",
        "encode with the tokenizer's special tokens (e.g. BOS)",
        switch=True,
        group=GENERATION,
    )
    chat_template: bool = option(
        False,
        "--chat-template",
        "wrap each prompt as a user message in the model's chat template",
        switch=True,
        group=GENERATION,
    )
    prefix: str = option(
        "",
        "--prefix",
        "a prefix (e.g. a system prompt) prefilled once before the prompt; its KV cache is handed to generate and "
        "positions count from its first token",
        group=GENERATION,
        given_only=True,
    )
    decoding: Decoding = GREEDY
    check: UserTarget | None = None  # `equiv check`: the user's steering code, judged against ``spec`` (the intent)

    @property
    def prompt_list(self) -> tuple[str, ...]:
        return self.prompts or (self.prompt,)

    @property
    def findings(self) -> tuple[str, ...]:
        """The finding ids this run runs, in report order, unless asked: ``batch_invariance`` only for a batch,
        ``site`` only for a site other than the block output."""
        if self.experiments is not None:
            return self.experiments
        names = self.finding_ids
        if self.spec is None or self.check is not None:
            return names
        if len(self.prompt_list) == 1:
            names = tuple(n for n in names if n != "batch_invariance")
        if self.spec.site.is_default:
            names = tuple(n for n in names if n != "site")
        return names

    @property
    def finding_ids(self) -> tuple[str, ...]:
        """Every finding id of this run's mode, in report order: the study's five, the spec findings, or the
        findings about the user's code (``equiv check``)."""
        if self.check is not None:
            return USER_FINDING_IDS
        return STUDY_FINDINGS if self.spec is None else SPEC_FINDING_IDS

    def to_dict(self) -> dict[str, Any]:
        skip = ("experiments", "spec", "prompts", "decoding", "check", "prefix")
        values = {name: getattr(self, name) for name in self.__slots__ if name not in skip}
        return {
            **values,
            "prompts": list(self.prompt_list),
            **({"prefix": self.prefix} if self.prefix else {}),
            "decoding": self.decoding.to_dict(),
            "experiments": list(self.findings),
            "spec": None if self.spec is None else self.spec.to_dict(),
            **({} if self.check is None else {"check": self.check.to_dict()}),
        }


STUDY_REFUSES = "applies to steering specs (give one, e.g. --recipe original-zero); the five findings use"
MAX_BATCH = 64  # each prompt also runs alone, every arm, and keeps [steps, vocab] logits per arm


def read_prompts(source: str) -> tuple[str, ...]:
    """The prompts of ``source`` (a file, or ``-`` for stdin): one per line, blank lines skipped.

    Raises UserInputError for a file that cannot be read or holds no prompt.
    """
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise UserInputError(f"--prompts {source!r}: cannot read it: {type(error).__name__}") from None
    prompts = tuple(line for line in text.removeprefix("\ufeff").splitlines() if line.strip())
    if not prompts:
        raise UserInputError(f"--prompts {source!r} holds no prompt; give one prompt per line")
    return prompts


# A RunConfig that validate_config returned: the type run_findings takes, so a run's config is checked once, at the
# edge, and never again below it (the checks that need the loaded model are the runner's own).
ValidRunConfig = NewType("ValidRunConfig", RunConfig)


def validate_config(config: RunConfig) -> ValidRunConfig:
    """``config``, checked for all that can be checked before loading a model (cheap checks first; raises
    UserInputError with one clear message naming the valid range)."""
    for index, prompt in enumerate(config.prompt_list):
        if not prompt.strip():
            raise UserInputError(
                "prompt is empty; give a prompt of at least 2 tokens"
                if len(config.prompt_list) == 1
                else f"prompt {index + 1} is empty; give one non-empty prompt per line"
            )
    if len(config.prompt_list) > MAX_BATCH:
        raise UserInputError(f"{len(config.prompt_list)} prompts: valid: at most {MAX_BATCH} per run (split the file)")
    if config.padding is not None:
        padding_side(config.padding)  # typed as a Padding; the command line and library callers pass strings
    if config.check is not None and config.spec is None:
        raise UserInputError(
            "equiv check needs the intent: what the code is meant to do, as a spec (--recipe, --spec or --op ...)"
        )
    if config.spec is None:
        for flag, used in (
            ("--prompts", len(config.prompt_list) > 1),
            ("--padding", config.padding is not None),
            ("--add-special-tokens", config.add_special_tokens),
            ("--chat-template", config.chat_template),
            ("--do-sample", config.decoding.do_sample),
            ("--stop-at-eos", config.decoding.stop_at_eos),
            ("--prefix", bool(config.prefix)),
        ):
            if used:
                raise UserInputError(f"{flag} {STUDY_REFUSES} one prompt as written, greedy, exactly N tokens")
    if config.prefix:
        _check_prefix(config)
    check_prompt(config.prompt_list[0])
    check_new_tokens(config.max_new_tokens)
    check_seed(config.seed)
    if not config.findings:
        raise UserInputError(f"--only selects no finding; valid: {', '.join(config.finding_ids)}")
    kind = "experiment" if config.spec is None else "spec finding"
    for name in config.findings:
        check_name(kind, name, config.finding_ids)
    repeated = sorted({name for name in config.findings if config.findings.count(name) > 1})
    if repeated:
        raise UserInputError(f"--only lists {repeated[0]} more than once; give each finding once")
    check_dtype(config.dtype)
    check_attn_implementation(config.attn_implementation)
    check_model_name(config.model, BUILTIN_MODEL_INFO)
    shape = known_shape(config.model)
    if shape is not None:
        check_layers(config, shape.num_layers)
        _check_known_shape(config, shape)
    check_device_name(config.device)
    return ValidRunConfig(config)


def _check_known_shape(config: RunConfig, shape: ModelShape) -> None:
    """What a built-in model's catalogue shape settles before it loads: new tokens past its context (a prompt
    takes at least 2 positions), a vector file of the wrong width (read from the file's header)."""
    check_new_tokens_fit(config.max_new_tokens, config.model, shape.max_positions)
    spec = config.spec
    at_residual = spec is not None and spec.site.at_residual
    if spec is not None and at_residual and spec.vector is not None and spec.vector.kind == "file":
        found = header_shape(Path(spec.vector.path))
        if found is not None:
            check_vector_shape(spec.vector.path, found, shape.hidden_size, len(spec.layers.resolve(shape.num_layers)))


def _check_prefix(config: RunConfig) -> None:
    """A cached prefix continues one prompt, as written: with several prompts the padding would sit between the
    prefix and a prompt; a chat template wraps the prompt alone; equiv check runs the user's own generation."""
    if not config.prefix.strip():
        raise UserInputError("--prefix is empty; give the text to prefill, or leave --prefix out")
    for flag, used in (
        ("--prompts", len(config.prompt_list) > 1),
        ("--chat-template", config.chat_template),
        ("equiv check", config.check is not None),
    ):
        if used:
            raise UserInputError(f"--prefix with {flag}: a cached prefix continues one prompt as written, in equiv run")


def check_layers(config: RunConfig, num_layers: int) -> None:
    if config.spec is not None:
        config.spec.layers.resolve(num_layers)
    elif config.layer is not None:
        check_layer(config.layer, num_layers)
