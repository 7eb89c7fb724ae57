"""The steering vectors of the intents, made once per model and saved, so that the reference (``--vector FILE``)
and every library apply the very same numbers; and the :class:`SteeringTask` an adapter gets from them.

ActAdd's vector (single-vector form, Turner et al. 2023, arXiv:2308.10248): block ``layer``'s output at the last
token of "I love this" minus the same on "I hate this" (the recipes' ``actadd:I love this|I hate this``). The
ablated direction at each block: the same difference for "The weather today is" / "... was". Read with a plain
forward hook on the block, without the KV cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from equiv_core.conformance.intents import CONTRAST, SCALE, TENSE, Intent, intent_layers
from equiv_core.models.architecture import find_decoder_layers, forward_with_hooks, hidden_states_of
from equiv_core.spec.steering_spec import Layers


@dataclass(frozen=True, slots=True, eq=False)
class SteeringTask:
    """What an adapter is handed for one cell: the intent and its numbers, as every library gets them.

    ``layers``: the absolute decoder-block indices the intent steers, ascending. ``vectors``: [len(layers),
    hidden], float32 on the CPU (the cells' models are), row ``i`` for ``layers[i]``, as stored in the file: the
    unscaled steering vector (add; the coefficient is ``scale``) or the ablated direction, *not* normalised (hand it
    to an API that normalises it itself; :attr:`directions` is ``v / v.norm()``, as a user writes it and the
    reference computes it); None for ``original-zero``. ``vector_file``: that file (one ``[len(layers), hidden]``
    float32 tensor, ``torch.save``).
    ``prompt_length``: tokens of the prompt (one prompt, no padding). ``new_tokens``: tokens to generate.
    ``workdir``: a directory the adapter may write files to (a library that reads its steering from a file).
    """

    intent: Intent
    layers: tuple[int, ...]
    vectors: torch.Tensor | None
    scale: float
    vector_file: Path | None
    prompt_length: int
    new_tokens: int
    workdir: Path

    @property
    def directions(self) -> torch.Tensor:
        """Unit directions, ``v / v.norm()`` per row of :attr:`vectors` ([len(layers), hidden]); ValueError without
        vectors."""
        if self.vectors is None:
            raise ValueError(f"intent {self.intent} has no vectors")
        return torch.stack([row / row.norm() for row in self.vectors])


def _last_token_outputs(model: nn.Module, tokenizer: Any, prompt: str, layers: tuple[int, ...]) -> torch.Tensor:
    """Blocks ``layers``' outputs at the last token of ``prompt``: [len(layers), hidden], float32."""
    _, blocks = find_decoder_layers(model)
    kept: dict[int, torch.Tensor] = {}
    handles = [
        blocks[layer].register_forward_hook(
            lambda _module, _args, output, layer=layer: kept.__setitem__(layer, hidden_states_of(output)[0, -1])
        )
        for layer in layers
    ]
    ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids.to(model.device)
    forward_with_hooks(model, ids, handles)
    return torch.stack([kept[layer].float() for layer in layers])


def _contrast(model: nn.Module, tokenizer: Any, prompts: tuple[str, str], layers: tuple[int, ...]) -> torch.Tensor:
    """The first prompt's last-token block outputs minus the second's, at ``layers``: [len(layers), hidden]."""
    first, second = prompts
    return _last_token_outputs(model, tokenizer, first, layers) - _last_token_outputs(model, tokenizer, second, layers)


def steered_layers(intent: Intent, num_layers: int) -> tuple[int, ...]:
    """The blocks ``intent`` steers on a model of ``num_layers`` blocks (its ``--layers``, resolved)."""
    return Layers(intent_layers(intent)).resolve(num_layers)


def write_vectors(model: nn.Module, tokenizer: Any, directory: Path) -> dict[Intent, Path]:
    """Save each intent's vectors under ``directory`` (``actadd.pt``: [1, hidden]; ``ablate.pt``: [num_layers,
    hidden]); the file per intent (``original-zero`` has none)."""
    directory.mkdir(parents=True, exist_ok=True)
    num_layers = len(find_decoder_layers(model)[1])
    actadd, ablate = directory / "actadd.pt", directory / "ablate.pt"
    torch.save(_contrast(model, tokenizer, CONTRAST, steered_layers(Intent.ACTADD_ALL, num_layers)), actadd)
    torch.save(_contrast(model, tokenizer, TENSE, steered_layers(Intent.ABLATE_ALL, num_layers)), ablate)
    return {Intent.ACTADD_ALL: actadd, Intent.CAA_GENERATED: actadd, Intent.ABLATE_ALL: ablate}


def steering_task(
    intent: Intent, vector_file: Path | None, num_layers: int, prompt_length: int, new_tokens: int, workdir: Path
) -> SteeringTask:
    """The task an adapter gets for ``intent`` on a model of ``num_layers`` blocks: the file's vectors, float32."""
    layers = steered_layers(intent, num_layers)
    vectors = None
    if vector_file is not None:
        stored = torch.load(vector_file, map_location="cpu", weights_only=True)
        vectors = stored.expand(len(layers), stored.shape[-1]).float().contiguous()
    return SteeringTask(intent, layers, vectors, SCALE, vector_file, prompt_length, new_tokens, workdir)
