"""How tokens are chosen: greedy or sampled, and whether EOS may end a row early. Torch-free, so the command line
can check it before any model work."""

from __future__ import annotations

import math
from dataclasses import dataclass

from equiv_core.config.options import option
from equiv_core.support.errors import UserInputError

# The help section of the generation settings (spec findings check them).
GENERATION = "generation"


@dataclass(frozen=True, slots=True)
class Decoding:
    """How tokens are chosen: greedy (the default), or sampled from ``temperature``-scaled logits restricted to
    the ``top_k`` most likely tokens (0: no limit) and the smallest set holding ``top_p`` of the probability, with
    torch's global generator seeded with ``seed`` right before every arm's ``generate`` (so every arm draws the same
    random numbers). ``stop_at_eos``: a row may end at EOS before the requested number of new tokens.
    """

    do_sample: bool = option(
        False, "--do-sample", "sample instead of greedy decoding (seeded by --seed)", switch=True, group=GENERATION
    )
    temperature: float = option(
        1.0, "--temperature", "sampling temperature (> 0, default 1)", parse=float, given_only=True, group=GENERATION
    )
    top_k: int = option(
        0,
        "--top-k",
        "sample from the k most likely tokens (default 0: off)",
        parse=int,
        given_only=True,
        group=GENERATION,
    )
    top_p: float = option(
        1.0, "--top-p", "nucleus sampling mass, in (0, 1] (default 1)", parse=float, given_only=True, group=GENERATION
    )
    seed: int = 0  # the run's --seed
    stop_at_eos: bool = option(
        False, "--stop-at-eos", "let generation end at EOS before --max-new-tokens", switch=True, group=GENERATION
    )

    def __post_init__(self) -> None:
        if not self.do_sample:
            changed = [
                flag
                for flag, value, default in (
                    ("--temperature", self.temperature, 1.0),
                    ("--top-k", self.top_k, 0),
                    ("--top-p", self.top_p, 1.0),
                )
                if value != default
            ]
            if changed:
                raise UserInputError(f"{changed[0]} applies to sampling; give --do-sample too (greedy uses none)")
            return
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise UserInputError(f"--temperature {self.temperature:g}: valid: a number > 0 (greedy is the default)")
        if self.top_k < 0:
            raise UserInputError(f"--top-k {self.top_k}: valid: 0 (off) or a positive number of tokens")
        if not 0 < self.top_p <= 1:
            raise UserInputError(f"--top-p {self.top_p:g}: valid: (0, 1]")

    def describe(self) -> str:
        how = (
            f"sampled (temperature {self.temperature:g}, top-k {self.top_k or 'off'}, top-p {self.top_p:g}, "
            f"seed {self.seed})"
            if self.do_sample
            else "greedy"
        )
        return how + (", stops at EOS" if self.stop_at_eos else "")

    def to_dict(self) -> dict[str, object]:
        return {
            "do_sample": self.do_sample,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop_at_eos": self.stop_at_eos,
        }


GREEDY = Decoding()
