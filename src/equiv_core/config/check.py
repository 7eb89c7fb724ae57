"""What ``equiv check`` checks: the user's steering code, named ``FILE.py:NAME``, and the form it is written in.
Importable without torch: a missing file or a malformed target is answered before anything loads."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from equiv_core.support.errors import UserInputError

TARGET_HELP = "FILE.py:NAME, the steering function to check (hooks form or generate form; see README)"


class Form(enum.StrEnum):
    """How the user's steering runs (README, "Check your own steering").

    ``hooks``: ``steer(model) -> ContextManager`` (or ``steer(model, tokenizer)``) installs steering on the Hugging
    Face model and removes it on exit; equiv-bench runs HF ``generate`` inside it. ``generate``: ``steer(model,
    tokenizer, input_ids, attention_mask, max_new_tokens, generation_kwargs) -> LongTensor [batch, prompt + new]``
    generates its own way.
    """

    HOOKS = "hooks"
    GENERATE = "generate"


FORMS = tuple(form.value for form in Form)


@dataclass(frozen=True, slots=True)
class UserTarget:
    """The user's steering function: ``path`` (a Python file) and ``name`` (a callable in it); ``form`` None: told
    apart by the callable's signature."""

    path: str
    name: str
    form: Form | None = None

    @classmethod
    def parse(cls, text: str, form: str | None = None) -> UserTarget:
        """``FILE.py:NAME`` checked (file exists and is Python, NAME is an identifier); UserInputError otherwise."""
        file, colon, name = text.rpartition(":")
        if not colon or not file or not name:
            raise UserInputError(f"{text!r}: give FILE.py:NAME, e.g. examples/steering/hook_every_pass.py:steer")
        if not name.isidentifier():
            raise UserInputError(f"{text!r}: {name!r} is not a Python name; give FILE.py:NAME")
        path = Path(file)
        if path.suffix != ".py":
            raise UserInputError(f"{text!r}: {file!r} is not a .py file; give FILE.py:NAME")
        if not path.is_file():
            raise UserInputError(f"{text!r}: no such file {file!r}")
        if form is not None and form not in FORMS:
            raise UserInputError(f"--form {form!r}; valid: {', '.join(FORMS)}")
        return cls(str(path), name, Form(form) if form is not None else None)

    def describe(self) -> str:
        return f"{self.path}:{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.describe(), "form": None if self.form is None else str(self.form)}
