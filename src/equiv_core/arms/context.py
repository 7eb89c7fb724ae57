"""Everything an experiment needs about one loaded model, built once per run and shared read-only."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from equiv_core.arms.model_work import ModelWork, tensor_key
from equiv_core.arms.nnsight import NnsightSteering
from equiv_core.arms.reference import hook_forward_logits, hook_generate
from equiv_core.arms.steering import Edit, GenerationRecord, When
from equiv_core.config.catalog import ArmName
from equiv_core.models.architecture import Architecture, describe
from equiv_core.models.load import LoadedModel


@dataclass(frozen=True, slots=True, eq=False)
class SteeringContext:
    """A loaded model, its architecture, its nnsight wrapper and the raw-hook reference, on one device."""

    loaded: LoadedModel
    architecture: Architecture
    nnsight: NnsightSteering

    @property
    def work(self) -> ModelWork:
        """The model work of this context: every generation and forward pass timed (see :mod:`model_work`)."""
        return self.nnsight.work

    @property
    def device(self) -> torch.device:
        return self.loaded.model.device

    @property
    def dtype(self) -> torch.dtype:
        return self.loaded.model.dtype

    def encode(self, prompt: str) -> torch.Tensor:
        """Prompt token ids, [1, n], on the model's device, without special tokens added."""
        ids = self.loaded.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
        return torch.as_tensor(ids).to(self.device)

    def decode(self, ids: list[int] | tuple[int, ...]) -> str:
        return str(self.loaded.tokenizer.decode(list(ids)))

    def reference(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        edit: Edit,
        when: When = "prompt",
        use_cache: bool = True,
    ) -> GenerationRecord:
        """The same edit with a raw PyTorch forward hook: the independent reference for every nnsight arm."""
        call = partial(
            hook_generate,
            self.loaded.model,
            input_ids,
            max_new_tokens,
            self.loaded.tokenizer.pad_token_id,
            edit,
            when,
            use_cache,
        )
        length = int(input_ids.shape[1])
        if when == "prompt" and -length <= edit.position < length:  # -1 and n-1: one edit on the prompt pass
            edit_key = Edit(edit.layer, edit.position % length)
        else:
            edit_key = edit
        return self.work.run(("hook", tensor_key(input_ids), max_new_tokens, edit_key, when, use_cache), call)

    def unsteered(self, input_ids: torch.Tensor, max_new_tokens: int, use_cache: bool = True) -> GenerationRecord:
        """Plain Hugging Face generation with no edit."""
        call = partial(
            hook_generate,
            self.loaded.model,
            input_ids,
            max_new_tokens,
            self.loaded.tokenizer.pad_token_id,
            None,
            use_cache=use_cache,
            arm=ArmName.UNSTEERED,
        )
        return self.work.run(("unsteered", tensor_key(input_ids), max_new_tokens, use_cache), call)

    def eos_token_ids(self) -> tuple[int, ...]:
        """The ids ``min_new_tokens`` forbids during generation (the model's EOS ids)."""
        eos = self.loaded.model.generation_config.eos_token_id
        if eos is None:
            eos = self.loaded.tokenizer.eos_token_id
        if eos is None:
            return ()
        return tuple(int(token) for token in (eos if isinstance(eos, (list, tuple)) else [eos]))

    def greedy_choice(self, logits: torch.Tensor) -> tuple[int, ...]:
        """The token greedy generation picks from each row of raw logits, with ``min_new_tokens`` in force.

        Generation runs with ``min_new_tokens`` equal to the number of new tokens, so EOS is masked before the
        argmax; a prediction from raw logits must mask it too or the two disagree exactly when EOS would win.
        """
        masked = logits.clone()
        masked[:, list(self.eos_token_ids())] = float("-inf")
        return tuple(int(token) for token in masked.argmax(-1).tolist())

    def reference_forward_logits(self, input_ids: torch.Tensor, edit: Edit | None) -> torch.Tensor:
        call = partial(hook_forward_logits, self.loaded.model, input_ids, edit)
        return self.work.run(("hook.forward_logits", tensor_key(input_ids), edit), call)


def build_context(loaded: LoadedModel) -> SteeringContext:
    """Probe the model's layout with a short forward pass and wrap it with nnsight."""
    probe = loaded.tokenizer("The weather", return_tensors="pt", add_special_tokens=False).input_ids
    architecture = describe(loaded.model, probe.to(loaded.model.device))
    steering = NnsightSteering.for_model(
        loaded.model, loaded.tokenizer, architecture.layers_path, architecture.block_output_form
    )
    return SteeringContext(loaded, architecture, steering)
