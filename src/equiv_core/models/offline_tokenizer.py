"""A byte-level BPE tokenizer built in code, so random-weight models need no file and no network.

The random models (``tiny-gpt2``, ``tiny-llama``, ``gpt2-small-random``) must load on any offline host,
including a GPU machine without the SmolLM2 file. Their tokenizer is trained here, deterministically, on a
small English text, then padded with placeholder tokens up to the model's vocabulary size so that every id
a random model can generate decodes to something readable (``<r1234>``). Encoding never yields a
placeholder: no merge produces one.
"""

from __future__ import annotations

import functools
import json

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

END_OF_TEXT = "<|endoftext|>"

# Text the merges are learned from. Plain sentences, so common English words (including every word of the
# original study's prompt, "The weather today is") become single tokens, as they are in GPT-2.
_CORPUS = (
    "The weather today is sunny and warm. The weather tomorrow is cold and windy.",
    "Today the weather is nice, so we walk in the park. Is the weather good today?",
    "The cat sat on the mat. The dog ran in the park. A bird is singing in the tree.",
    "It is a good day. It was a bad day. They said that the rain will stop soon.",
    "I think that this is the best time of the year. What do you think about it?",
    "The city of Paris is in France. The city of London is in England.",
    "Language models predict the next token from the tokens that came before it.",
    "We steer the model by editing its hidden states during generation.",
)
_MERGE_VOCAB_SIZE = 600  # alphabet (256 byte symbols) + special token + up to ~340 merges


@functools.lru_cache(maxsize=8)
def _trained_tokenizer_json() -> str:
    """Train the BPE merges once per process; the result is identical on every run (fixed text, no RNG)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_MERGE_VOCAB_SIZE,
        min_frequency=1,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS * 4, trainer)
    return str(tokenizer.to_str())


def offline_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A tokenizer with exactly ``vocab_size`` ids, the first few hundred learned, the rest placeholders."""
    base = Tokenizer.from_str(_trained_tokenizer_json())
    learned = base.get_vocab()
    if vocab_size < len(learned):
        raise ValueError(f"vocab_size must be at least {len(learned)} for the offline tokenizer, got {vocab_size}")
    merges = _merges_of(base)
    vocab = dict(learned)
    for token_id in range(len(learned), vocab_size):
        vocab[f"<r{token_id}>"] = token_id
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([END_OF_TEXT])
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer, eos_token=END_OF_TEXT, bos_token=END_OF_TEXT, pad_token=END_OF_TEXT
    )


def _merges_of(tokenizer: Tokenizer) -> list[tuple[str, str]]:
    """The learned merge list, read from the serialized model (the Python API does not expose it)."""
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    pairs = [merge.split(" ", 1) if isinstance(merge, str) else merge for merge in merges]
    return [(str(first), str(second)) for first, second in pairs]
