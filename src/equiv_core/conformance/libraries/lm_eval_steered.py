"""lm-evaluation-harness's ``steered`` model (lm-eval 0.4.13): the intents written as the steering file its README
and ``SteeredModel`` docstring describe, applied with its own ``steer`` context manager around HF ``generate``, as
``SteeredModel._model_generate`` does (lm_eval/models/hf_steered.py:278-280@0.4.13).

- The steering file: a ``.pt`` dict ``{hookpoint: {"steering_vector", "steering_coefficient", "action" ("add" or
  "clamp"), "bias", "head_index"}}`` (SteeredModel docstring, hf_steered.py:79-90; README "Steered Hugging Face
  `transformers` models", github.com/EleutherAI/lm-evaluation-harness/blob/main/README.md, same text in the 0.4.13
  wheel's METADATA). Hookpoints are module names under ``model.base_model`` (hf_steered.py:51-53): ``h.L`` for GPT-2
  (base model ``transformer``), ``layers.L`` for Llama (base model ``model``), as the README's ``layers.3``.
- ``SteeredModel(pretrained=<loaded model>, tokenizer=<loaded tokenizer>, steer_path=...)``: ``HFLM`` takes "a
  pre-initialized ``transformers.PreTrainedModel`` instance" (lm_eval/models/huggingface.py:120-124, 217-231@0.4.13),
  nothing is downloaded when the tokenizer is passed too (huggingface.py:956-969; without it, 970-979 would call
  ``AutoTokenizer.from_pretrained(model.name_or_path)``). The file's entries become ``hook_to_steer`` callables
  (hf_steered.py:112-144): ``add`` -> ``acts + coefficient * vector`` at every position (210-228), ``clamp`` ->
  ``acts + d * (coefficient - acts . d)`` with ``d`` the normalised vector (230-268).
- ``steer(model, hook_to_steer)`` (hf_steered.py:22-63) registers a plain ``register_forward_hook`` per hookpoint that
  replaces the block's output (``output[0]`` of a tuple, 39-42) and removes every handle on exit (59-63). A forward
  hook runs on every forward pass, so under the KV cache it sees the whole prompt at the prefill and the one new
  position at each decode pass.

The steering file has no position, step or pass selector: ``caa-generated`` written idiomatically adds at every
prompt position too, and ``original-zero`` cannot be written at all. Their workarounds hand ``steer`` a hookpoint ->
callable dict of their own (its documented argument, hf_steered.py:29-30), as ``SteeredModel`` does with its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import torch
from lm_eval.models.hf_steered import SteeredModel, steer

from equiv_core.conformance.adapter import Adapter, Variant, Way
from equiv_core.conformance.intents import Intent
from equiv_core.conformance.vectors import SteeringTask
from equiv_core.models.architecture import find_decoder_layers

README = (
    "https://github.com/EleutherAI/lm-evaluation-harness/blob/main/README.md#steered-hugging-face-transformers-models"
)
CODE = "lm_eval/models/hf_steered.py@0.4.13"
HooksForm = Callable[[Any, Any], AbstractContextManager[None]]
Entry = Callable[[torch.Tensor], dict[str, Any]]


def _hookpoints(model: Any, layers: tuple[int, ...]) -> list[str]:
    """The names ``steer`` resolves (module names under ``model.base_model``, hf_steered.py:51) of blocks ``layers``."""
    _, blocks = find_decoder_layers(model)
    names = {id(module): name for name, module in model.base_model.named_modules()}
    return [names[id(blocks[layer])] for layer in layers]


def _steered_model(task: SteeringTask, entry: Entry) -> HooksForm:
    """The README's way: write the steering file (one entry per steered block), load it with ``SteeredModel`` around
    the already-loaded model and tokenizer, and generate inside ``steer(lm.model, lm.hook_to_steer)``."""
    assert task.vectors is not None
    vectors = task.vectors

    @contextmanager
    def steer_fn(model: Any, tokenizer: Any) -> Iterator[None]:
        names = _hookpoints(model, task.layers)
        config = {name: entry(vector) for name, vector in zip(names, vectors, strict=True)}
        path = task.workdir / f"steer_config_{task.intent.value}.pt"
        torch.save(config, path)
        lm = SteeredModel(pretrained=model, tokenizer=tokenizer, steer_path=str(path))
        with steer(lm.model, lm.hook_to_steer):
            yield

    return steer_fn


def _vector(vector: torch.Tensor) -> torch.Tensor:
    """A steering vector as the README writes one: ``[1, hidden]`` (SteeredModel moves it to the model's device and
    dtype, hf_steered.py:115-117)."""
    return vector.detach().to("cpu").clone().reshape(1, -1)


def actadd_all(task: SteeringTask) -> HooksForm:
    """``action: add`` with ``steering_coefficient = scale`` at block ``layers[0]``: ``acts + scale * v`` at every
    position of every forward pass (hf_steered.py:124-131, 226)."""

    def entry(vector: torch.Tensor) -> dict[str, Any]:
        return {
            "steering_vector": _vector(vector),
            "steering_coefficient": task.scale,
            "action": "add",
            "bias": None,
            "head_index": None,
        }

    return _steered_model(task, entry)


def caa_generated(task: SteeringTask) -> HooksForm:
    """The only addition the steering file has: ``action: add``, every position (hf_steered.py:125), so the prompt
    positions before the last one are steered too at the prefill."""
    return actadd_all(task)


def ablate_all(task: SteeringTask) -> HooksForm:
    """``action: clamp`` with ``steering_coefficient = 0`` at every block: ``acts + d * (0 - acts . d)``, i.e.
    ``h - (h . d) d``, at every position of every pass (hf_steered.py:132-140, 262-263)."""

    def entry(vector: torch.Tensor) -> dict[str, Any]:
        return {
            "steering_vector": _vector(vector),
            "steering_coefficient": 0.0,
            "action": "clamp",
            "bias": None,
            "head_index": None,
        }

    return _steered_model(task, entry)


def _steer_callable(task: SteeringTask, make: Callable[[], Callable[[torch.Tensor], torch.Tensor]]) -> HooksForm:
    """``steer(model, {hookpoint: fn})`` at block ``layers[0]`` with a callable of our own (a fresh one, and so a
    fresh pass count, for each entry)."""

    def steer_fn(model: Any, tokenizer: Any) -> AbstractContextManager[None]:
        (name,) = _hookpoints(model, task.layers[:1])
        manager: AbstractContextManager[None] = steer(model, {name: make()})
        return manager

    return steer_fn


def caa_generated_last(task: SteeringTask) -> HooksForm:
    """``acts[:, -1] += scale * v`` in every pass: the last prompt position at the prefill, the one new position at
    each decode pass (KV cache)."""
    assert task.vectors is not None
    added = task.vectors[0] * task.scale

    def make() -> Callable[[torch.Tensor], torch.Tensor]:
        def add_last(acts: torch.Tensor) -> torch.Tensor:
            steered = acts.clone()
            steered[:, -1] = steered[:, -1] + added
            return steered

        return add_last

    return _steer_callable(task, make)


def original_zero_prefill(task: SteeringTask) -> HooksForm:
    """Zero position ``prompt_length - 1`` in the first pass through the block (the prefill) only."""
    last = task.prompt_length - 1

    def make() -> Callable[[torch.Tensor], torch.Tensor]:
        passes = 0

        def zero_last(acts: torch.Tensor) -> torch.Tensor:
            nonlocal passes
            passes += 1
            if passes > 1:
                return acts
            steered = acts.clone()
            steered[:, last] = 0.0
            return steered

        return zero_last

    return _steer_callable(task, make)


NO_SELECTOR = (
    "the steering file's entries are keyed by hookpoint only and its two actions apply to every position of every "
    "forward pass (add: `acts + vector`, clamp: set the component along one direction; hf_steered.py:79-90, "
    "124-142, 210-268@0.4.13): no position, step or prefill selector, and no action that zeroes the whole state"
)

ADAPTER = Adapter(
    distribution="lm-eval",
    ways=(
        Way(Intent.ACTADD_ALL, README, actadd_all),
        Way(
            Intent.CAA_GENERATED,
            README,
            caa_generated,
            note="the file's add action steers every prompt position, not only the last",
        ),
        Way(
            Intent.CAA_GENERATED,
            f"{CODE}:22-63 (steer)",
            caa_generated_last,
            variant=Variant.WORKAROUND,
            note="steer() with our own callable adding at position -1 of each pass",
        ),
        Way(Intent.ORIGINAL_ZERO, README, not_expressible=NO_SELECTOR),
        Way(
            Intent.ORIGINAL_ZERO,
            f"{CODE}:22-63 (steer)",
            original_zero_prefill,
            variant=Variant.WORKAROUND,
            note="steer() with our own callable zeroing the last prompt position in the first pass only",
        ),
        Way(
            Intent.ABLATE_ALL,
            README,
            ablate_all,
            note="clamp action with steering_coefficient 0 at every block = h - (h.d)d",
        ),
    ),
)
