"""TransformerLens 4.3.0 (``TransformerBridge``): the intents written as TransformerLens writes an intervention during
generation: a hook function on the block's residual-stream hook point ``blocks.{L}.hook_resid_post``, installed
with ``bridge.hooks(fwd_hooks=[(name, fn)])`` around ``bridge.generate(...)``.

Citations are to the wheel ``transformer_lens/...@4.3.0`` unless a URL is given.

Docs followed: the hook system page (docs/source/content/hook_system.md, dev-4.x;
https://transformerlensorg.github.io/TransformerLens/content/hook_system.html): a hook is ``fn(tensor, *, hook)``
returning the replacement (in-place ``tensor[...] = ...`` then ``return tensor`` is "the common pattern"), hooks
added inside ``with model.hooks(...)`` are removed on exit, and the residual stream after block L is
``blocks.{L}.hook_resid_post``; demos/Bridge_Evals_Demo.ipynb (dev-4.x) wraps calls "while an intervention is
applied (ablation, patching, steering vector)" in ``with bridge.hooks(fwd_hooks=[...])``. Positional edits follow
demos/Patchscopes_Generation_Demo.ipynb (``value[:, pos_id, :] = ...`` on ``blocks.{L}.hook_resid_post``).

Wrapping the loaded model (model_bridge/sources/transformers/source.py@4.3.0): ``boot_transformers(name,
hf_model=model, tokenizer=...)`` takes the config from ``hf_model.config`` (L154-157, no hub call); ``name`` is only
recorded as ``cfg.model_name`` (sources/_bridge_builder.py:192) and used to load a tokenizer when none is given
(L435-463, a hub/disk load), so any label works: the model's ``name_or_path`` or its class name is passed.
``load_weights`` is ignored with ``hf_model`` (docstring L94-96). Even a given tokenizer is re-loaded unless it says
it adds BOS: ``get_tokenizer_with_bos`` (utilities/tokenize_utils.py:154-176) pops ``init_kwargs["name_or_path"]``
(a KeyError for a tokenizer built in memory, e.g. the random models' offline tokenizer) and calls
``AutoTokenizer.from_pretrained(name_or_path, add_bos_token=True)``. The bridge is therefore handed a copy of the
tokenizer whose ``init_kwargs`` carry ``name_or_path`` and ``add_bos_token=True``, which TL keeps as it is (L160-161);
generation here starts from token ids, so the tokenizer only supplies EOS/pad ids.

What booting does to the model, in place, with no unwrap in the library: the attention kernel becomes ``eager``
(source.py:320-321 -> utilities/attn_implementation.py:24-27 ``model.set_attn_implementation("eager")``, hence
``attn_implementation="eager"`` on every way); every mapped submodule is replaced by a bridge component
(component_setup.py:80-101 ``setattr`` into the HF model; L422-447 a new ``nn.ModuleList`` of ``BlockBridge`` at
``transformer.h`` / ``model.layers``); an ``lm_head`` without bias gets a zero ``bias`` buffer
(generalized_components/unembedding.py:47-57); each block's first forward registers forward pre-hooks on its ln
bridges (generalized_components/block.py:179, 204). The bridge's forward is not HF's: attention is recomputed by the
bridge (joint_qkv_attention.py:362-381 for GPT-2, position_embeddings_attention.py:273-283 for Llama) and GPT-2's
LayerNorm by ``NormalizationBridge._python_norm_forward`` (normalization.py:41, 109-114; RMSNorm calls the HF
module, rms_normalization.py:38, normalization.py:226). Because the components sit inside the HF model, its hooks
fire in ``hf_model.generate`` too (``bridge.hf_generate`` is exactly that, transformer_bridge.py:4013, 4164).

Generation (transformer_bridge.py@4.3.0): ``generate`` (L2986; ``do_sample=True`` and ``stop_at_eos=True`` by
default, L2990-2992) runs its own loop with the HF KV cache (``use_past_kv_cache=True``, L2998, L3472): the prefill
passes the whole prompt (L2834-2838), each decode pass only ``current_tokens[:, -1:]`` (L2828-2832); greedy is
``argmax`` of the raw last-position logits (L2890-2892, utilities/logits_utils.py:104-108). So a hook on
``blocks.{L}.hook_resid_post`` (alias of ``blocks.{L}.hook_out``, block.py:47, fired on the block's output,
block.py:262-301) sees ``[batch, prompt, hidden]`` at the prefill and ``[batch, 1, hidden]`` at each decode pass.
TL's loop has no logits processor: ``min_new_tokens`` cannot be honoured (EOS is not masked; ``stop_at_eos=False``
only keeps going after it), whereas ``hf_generate`` forwards HF generation kwargs (L4013-4164).

Known upstream issues: TransformerLens#1526/#1527 (hook_scale/hook_normalized edits silently did nothing on the 13
architectures using the native-norm path; fixed before 4.3.0, normalization.py:157-230; block hook_out is not
affected); #1639 (BLOOM's ``hook_attn_out``/``hook_mlp_out`` aliases were residual-added states; not used here).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
from transformer_lens.model_bridge import NormalizationBridge, TransformerBridge

from equiv_core.conformance.adapter import Adapter, Form, Variant, Way
from equiv_core.conformance.intents import Intent
from equiv_core.conformance.vectors import SteeringTask

DOCS = "https://transformerlensorg.github.io/TransformerLens/content/hook_system.html"
FOLLOWS = (
    f"{DOCS} (with model.hooks(fwd_hooks=...), blocks.{{L}}.hook_resid_post) around "
    "transformer_lens/model_bridge/transformer_bridge.py@4.3.0 TransformerBridge.generate (L2986)"
)
FOLLOWS_WORKAROUND = (
    f"{DOCS}; transformer_lens/model_bridge/transformer_bridge.py@4.3.0 TransformerBridge.hf_generate (L4013)"
)
EAGER = "eager"  # boot_transformers switches the loaded model to eager attention in place (source.py:320-321)

GenerateForm = Callable[..., Any]
HookFn = Callable[..., torch.Tensor]
FwdHooks = list[tuple[str, HookFn]]


def _hook_name(layer: int) -> str:
    return f"blocks.{layer}.hook_resid_post"


def _boot_tokenizer(tokenizer: Any) -> Any:
    """A copy of ``tokenizer`` that ``get_tokenizer_with_bos`` (utilities/tokenize_utils.py:154-161@4.3.0) keeps as
    it is instead of re-loading it by name (a KeyError for a tokenizer built in memory)."""
    copied = copy.deepcopy(tokenizer)
    copied.init_kwargs = {**copied.init_kwargs, "name_or_path": copied.name_or_path, "add_bos_token": True}
    return copied


def _boot(model: Any, tokenizer: Any) -> Any:
    """``TransformerBridge.boot_transformers`` on the already-loaded model: config from ``model.config``, nothing
    loaded (README "Use"; source.py:154-157, 314-321@4.3.0)."""
    parameter = next(model.parameters())
    return TransformerBridge.boot_transformers(
        getattr(model, "name_or_path", "") or type(model).__name__,
        hf_model=model,
        tokenizer=_boot_tokenizer(tokenizer),
        load_weights=False,
        device=str(parameter.device),
        dtype=parameter.dtype,
    )


def _tl_generate(bridge: Any, input_ids: Any, attention_mask: Any, new: int, kwargs: dict[str, Any]) -> Any:
    """``bridge.generate`` with the cell's token choice: greedy or sampled; with ``min_new_tokens`` (EOS masked by
    HF in the reference) TL can only not stop at EOS (``stop_at_eos=False``): its loop has no EOS mask."""
    sampling: dict[str, Any] = {key: kwargs[key] for key in ("temperature", "top_p") if key in kwargs}
    if kwargs.get("top_k"):
        sampling["top_k"] = kwargs["top_k"]
    return bridge.generate(
        input_ids,
        max_new_tokens=new,
        do_sample=bool(kwargs.get("do_sample", False)),
        stop_at_eos="min_new_tokens" not in kwargs,
        attention_mask=attention_mask,
        return_type="tokens",
        verbose=False,
        **sampling,
    )


def _idiomatic(build_hooks: Callable[[], FwdHooks]) -> GenerateForm:
    """Generate form: boot the bridge on the model, then ``with bridge.hooks(fwd_hooks=...): bridge.generate(...)``
    (the bridge stays in the model afterwards: TransformerLens has no unwrap)."""

    def steer(model: Any, tokenizer: Any, input_ids: Any, attention_mask: Any, new: int, kwargs: Any) -> Any:
        bridge = _boot(model, tokenizer)
        with bridge.hooks(fwd_hooks=build_hooks()):
            return _tl_generate(bridge, input_ids, attention_mask, new, dict(kwargs))

    return steer


class _ModelTree:
    """What booting changes in a model's module objects, kept before and put back after: every module's children,
    parameters and buffers (the swapped components, ``lm_head``'s added bias buffer) and the attention kernel."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.saved = [
            (
                module,
                dict(module._modules),
                dict(module._parameters),
                dict(module._buffers),
                set(module._non_persistent_buffers_set),
            )
            for module in model.modules()
        ]
        config = getattr(model, "config", None)
        self.attn_implementation = getattr(config, "_attn_implementation", None)

    def put_back(self) -> None:
        for module, children, parameters, buffers, non_persistent in self.saved:
            module._modules.clear()
            module._modules.update(children)
            module._parameters.clear()
            module._parameters.update(parameters)
            module._buffers.clear()
            module._buffers.update(buffers)
            module._non_persistent_buffers_set.clear()
            module._non_persistent_buffers_set.update(non_persistent)
        config = getattr(self.model, "config", None)
        now = getattr(config, "_attn_implementation", None)
        if self.attn_implementation is not None and now != self.attn_implementation:
            self.model.set_attn_implementation(self.attn_implementation)


def _hf_generate(bridge: Any, input_ids: Any, attention_mask: Any, new: int, kwargs: dict[str, Any]) -> Any:
    """``bridge.hf_generate``: HF's own loop over the bridged model, with the cell's generation kwargs
    (``min_new_tokens`` masks EOS as in the reference); its own pad id (the tokenizer's EOS) replaces the cell's."""
    sampling = {key: kwargs.pop(key) for key in ("temperature", "top_k", "top_p") if key in kwargs}
    do_sample = bool(kwargs.pop("do_sample", False))
    kwargs.pop("pad_token_id", None)
    return bridge.hf_generate(
        input_ids,
        max_new_tokens=new,
        do_sample=do_sample,
        attention_mask=attention_mask,
        return_type="tokens",
        **sampling,
        **kwargs,
    )


def _cache_under_its_old_name(_module: Any, args: Any, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Hand an attention bridge the KV cache under the name it reads: transformers 5.24 passes it to the attention
    module as ``cache``, TransformerLens 4.3.0 reads ``past_key_values`` or ``layer_past`` only
    (generalized_components/attention.py:433-440@4.3.0), so the cache stays empty and every decode pass attends to
    itself alone (bench/CONFORMANCE-FINDINGS.md)."""
    if "cache" in kwargs and kwargs.get("past_key_values") is None:
        kwargs = {**kwargs, "past_key_values": kwargs["cache"]}
    return args, kwargs


def _workaround(build_hooks: Callable[[], FwdHooks]) -> GenerateForm:
    """The same hooks, with what the idiomatic run gets wrong or leaves behind undone: the KV cache handed to the
    attention bridges under the name they read, HF's generate loop through the bridge (``bridge.hf_generate``, so
    ``min_new_tokens`` masks EOS), the norm bridges on their native path (the model's own LayerNorm modules run:
    HF numerics, and the final norm receives the last block's output), and the model's modules, parameters,
    buffers and attention kernel put back afterwards."""

    def steer(model: Any, tokenizer: Any, input_ids: Any, attention_mask: Any, new: int, kwargs: Any) -> Any:
        tree = _ModelTree(model)
        handles = []
        try:
            bridge = _boot(model, tokenizer)
            for module in bridge.modules():
                if isinstance(module, NormalizationBridge):
                    module.use_native_layernorm_autograd = True  # normalization.py:109-110, 226@4.3.0
                if hasattr(module, "_update_kv_cache"):  # the attention bridges (attention.py:424@4.3.0)
                    handles.append(module.register_forward_pre_hook(_cache_under_its_old_name, with_kwargs=True))
            with bridge.hooks(fwd_hooks=build_hooks()):
                return _hf_generate(bridge, input_ids, attention_mask, new, dict(kwargs))
        finally:
            for handle in handles:
                handle.remove()
            tree.put_back()

    return steer


def _add_everywhere(task: SteeringTask) -> Callable[[], FwdHooks]:
    assert task.vectors is not None
    layer, added = task.layers[0], task.scale * task.vectors[0]

    def add_vector(resid: torch.Tensor, hook: Any) -> torch.Tensor:
        return resid + added

    return lambda: [(_hook_name(layer), add_vector)]


def _add_last(task: SteeringTask) -> Callable[[], FwdHooks]:
    """``resid[:, -1, :] += v``: with the KV cache (decode passes see only the new token) that is the last prompt
    position at the prefill and the one new position at every decode pass."""
    assert task.vectors is not None
    layer, added = task.layers[0], task.scale * task.vectors[0]

    def add_vector(resid: torch.Tensor, hook: Any) -> torch.Tensor:
        resid[:, -1, :] += added
        return resid

    return lambda: [(_hook_name(layer), add_vector)]


def _zero_position(task: SteeringTask, prefill_only: bool) -> Callable[[], FwdHooks]:
    """``resid[:, n - 1, :] = 0`` (the position as an index, as the Patchscopes demo writes ``value[:, pos_id, :]``).
    Idiomatic: in every pass, which under the KV cache has one position at decode passes (IndexError there).
    ``prefill_only``: only in the first pass the hook sees (the prefill)."""
    layer, position = task.layers[0], task.prompt_length - 1

    def build() -> FwdHooks:
        passes = [0]

        def zero(resid: torch.Tensor, hook: Any) -> torch.Tensor:
            passes[0] += 1
            if prefill_only and passes[0] > 1:
                return resid
            resid[:, position, :] = 0.0
            return resid

        return [(_hook_name(layer), zero)]

    return build


def _ablate(task: SteeringTask) -> Callable[[], FwdHooks]:
    """``h - (h . d_l) d_l`` on ``blocks.{l}.hook_resid_post`` of every block, each with its own direction."""
    assert task.vectors is not None
    hooks: FwdHooks = []
    for layer, direction in zip(task.layers, task.directions, strict=True):

        def ablate(resid: torch.Tensor, hook: Any, direction: torch.Tensor = direction) -> torch.Tensor:
            return resid - (resid @ direction).unsqueeze(-1) * direction

        hooks.append((_hook_name(layer), ablate))
    return lambda: list(hooks)


def actadd_all(task: SteeringTask) -> GenerateForm:
    return _idiomatic(_add_everywhere(task))


def caa_generated(task: SteeringTask) -> GenerateForm:
    return _idiomatic(_add_last(task))


def original_zero(task: SteeringTask) -> GenerateForm:
    return _idiomatic(_zero_position(task, prefill_only=False))


def ablate_all(task: SteeringTask) -> GenerateForm:
    return _idiomatic(_ablate(task))


def actadd_all_workaround(task: SteeringTask) -> GenerateForm:
    return _workaround(_add_everywhere(task))


def caa_generated_workaround(task: SteeringTask) -> GenerateForm:
    return _workaround(_add_last(task))


def original_zero_workaround(task: SteeringTask) -> GenerateForm:
    return _workaround(_zero_position(task, prefill_only=True))


def ablate_all_workaround(task: SteeringTask) -> GenerateForm:
    return _workaround(_ablate(task))


_PUT_BACK = (
    "the KV cache handed to the attention bridges as past_key_values (they ignore transformers 5.24's `cache`), "
    "bridge.hf_generate (HF's loop: min_new_tokens masks EOS), native norm path, the model's modules, parameters "
    "and buffers put back after (TL has no unwrap)"
)


_EMPTY_CACHE = (
    "TL 4.3.0's attention bridges read the KV cache as past_key_values; transformers 5.24 passes it as `cache`, so "
    "TL's cache stays empty and each decode pass attends to itself alone (bench/CONFORMANCE-FINDINGS.md)"
)


def _way(intent: Intent, steer: Callable[[SteeringTask], GenerateForm], note: str = "") -> Way:
    return Way(
        intent,
        FOLLOWS,
        steer,
        Form.GENERATE,
        attn_implementation=EAGER,
        note="; ".join(filter(None, (note, _EMPTY_CACHE))),
    )


def _workaround_way(intent: Intent, steer: Callable[[SteeringTask], GenerateForm], note: str = _PUT_BACK) -> Way:
    return Way(
        intent, FOLLOWS_WORKAROUND, steer, Form.GENERATE, Variant.WORKAROUND, attn_implementation=EAGER, note=note
    )


ADAPTER = Adapter(
    distribution="transformer-lens",
    ways=(
        _way(Intent.ACTADD_ALL, actadd_all),
        _way(Intent.CAA_GENERATED, caa_generated, "resid[:, -1] under TL's KV-cache loop"),
        _way(Intent.ORIGINAL_ZERO, original_zero, "resid[:, n-1] = 0 in every pass (decode passes hold 1 position)"),
        _way(Intent.ABLATE_ALL, ablate_all),
        _workaround_way(Intent.ACTADD_ALL, actadd_all_workaround),
        _workaround_way(Intent.CAA_GENERATED, caa_generated_workaround),
        _workaround_way(
            Intent.ORIGINAL_ZERO, original_zero_workaround, f"edit only the first pass (prefill); {_PUT_BACK}"
        ),
        _workaround_way(Intent.ABLATE_ALL, ablate_all_workaround),
    ),
)
