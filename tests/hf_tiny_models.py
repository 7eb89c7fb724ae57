"""Tiny random Hugging Face models of architectures the built-in models do not cover, built from configs and saved
as local model directories (weights, config, the offline tokenizer), so tests load them as a user's would be."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3nForCausalLM,
    Gemma3nTextConfig,
    MambaConfig,
    MambaForCausalLM,
    PhiConfig,
    PhiForCausalLM,
    PreTrainedModel,
)

from equiv_core.models.offline_tokenizer import offline_tokenizer

VOCAB = 1024
TEXT_LAYERS = 2
VISION_LAYERS = 3  # deeper than the text stack: a search for the largest ModuleList would pick the vision tower
HIDDEN = 64


def _text_sizes() -> dict[str, object]:
    return {
        "num_hidden_layers": TEXT_LAYERS,
        "hidden_size": HIDDEN,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "vocab_size": VOCAB,
        "max_position_embeddings": 256,
        "sliding_window": 8,
        "pad_token_id": 0,
        "bos_token_id": 0,
        "eos_token_id": 0,
    }


def gemma3_multimodal() -> PreTrainedModel:
    """``Gemma3ForConditionalGeneration`` (what ``AutoModelForCausalLM`` gives for the real Gemma 3 checkpoints):
    sizes only in ``config.text_config``, a SigLIP vision tower of :data:`VISION_LAYERS` layers."""
    vision = {
        "num_hidden_layers": VISION_LAYERS,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_attention_heads": 2,
        "image_size": 28,
        "patch_size": 14,
    }
    config = Gemma3Config(
        text_config=_text_sizes(),
        vision_config=vision,
        mm_tokens_per_image=4,
        image_token_index=VOCAB - 3,
        boi_token_index=VOCAB - 2,
        eoi_token_index=VOCAB - 1,
    )
    torch.manual_seed(0)
    return Gemma3ForConditionalGeneration(config)


def gemma3n_text() -> PreTrainedModel:
    """Gemma 3n's language model, whose decoder blocks output four stacked AltUp streams [4, batch, seq, hidden]."""
    config = Gemma3nTextConfig(
        **_text_sizes(),
        vocab_size_per_layer_input=VOCAB,
        hidden_size_per_layer_input=8,
        num_kv_shared_layers=0,
        laurel_rank=4,
        altup_num_inputs=4,
        activation_sparsity_pattern=None,
        layer_types=["sliding_attention", "full_attention"],
    )
    torch.manual_seed(0)
    return Gemma3nForCausalLM(config)


def mamba() -> PreTrainedModel:
    """A state-space model: its "KV cache" is a recurrent state per layer (no columns to count)."""
    torch.manual_seed(0)
    return MambaForCausalLM(
        MambaConfig(num_hidden_layers=2, hidden_size=HIDDEN, state_size=8, vocab_size=VOCAB, pad_token_id=0)
    )


def phi() -> PreTrainedModel:
    """A parallel block: attention and MLP both read one normalised tensor (transformers ``modeling_phi``)."""
    torch.manual_seed(0)
    config = PhiConfig(
        num_hidden_layers=2, hidden_size=HIDDEN, intermediate_size=128, num_attention_heads=4, vocab_size=VOCAB
    )
    return PhiForCausalLM(config)


def save_model_dir(model: PreTrainedModel, directory: Path) -> Path:
    """``model`` in eval mode with the offline tokenizer, saved as ``save_pretrained`` writes them; returns
    ``directory``."""
    model.eval()
    model.save_pretrained(directory)
    offline_tokenizer(VOCAB).save_pretrained(directory)
    return directory
