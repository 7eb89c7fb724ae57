"""PEFT adapter directories (``adapter_config.json`` beside the adapter weights, no ``config.json``): recognised
before any load, so a missing ``peft`` is one line, and loaded through transformers' own PEFT integration
(``AutoModelForCausalLM.from_pretrained`` on an adapter directory loads the base model its config names and injects
the adapter's layers into it; transformers ``integrations/peft.py``), which keeps the base model's module layout."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from equiv_core.support.errors import EnvironmentFault, UserInputError

ADAPTER_CONFIG = "adapter_config.json"
PEFT_INSTALL = "pip install 'equiv-bench[peft]' (or pip install peft)"


@dataclass(frozen=True, slots=True)
class Adapter:
    """A PEFT adapter: its directory, the base model its config names (``base_model_name_or_path``, a local
    directory or a hub id) and its method (``peft_type``: ``LORA``, ``IA3``, ...)."""

    path: str
    base_model: str
    peft_type: str

    def describe(self) -> str:
        return f"PEFT {self.peft_type} adapter {self.path} on base model {self.base_model}"

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "base_model": self.base_model, "peft_type": self.peft_type}


def adapter_in(directory: Path) -> Adapter | None:
    """The adapter ``directory`` holds, or None where it has no ``adapter_config.json``.

    Raises UserInputError for an adapter config that is not JSON or names no base model.
    """
    path = directory / ADAPTER_CONFIG
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserInputError(f"{path}: cannot read the adapter config: {type(error).__name__}") from None
    base = config.get("base_model_name_or_path") if isinstance(config, dict) else None
    if not isinstance(base, str) or not base:
        raise UserInputError(f"{path}: the adapter config names no base model (base_model_name_or_path)")
    return Adapter(str(directory.resolve()), base, str(config.get("peft_type", "unknown")))


def require_peft(adapter: Adapter, peft_version: str | None) -> None:
    """EnvironmentFault, one line, where ``peft`` is not installed (``peft_version`` None): without it transformers
    reads the adapter directory as a model and fails with "Should have a `model_type` key"."""
    if peft_version is None:
        raise EnvironmentFault(
            f"{adapter.path} is a PEFT {adapter.peft_type} adapter on base model {adapter.base_model}; loading it "
            f"needs the peft package: {PEFT_INSTALL}"
        )
