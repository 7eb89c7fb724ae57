"""The offline tokenizer used by random models: deterministic, exact size, readable placeholders."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from equiv_core.models.offline_tokenizer import _trained_tokenizer_json, offline_tokenizer


def test_prompt_tokenizes_like_gpt2() -> None:
    tokenizer = offline_tokenizer(1024)
    assert tokenizer.tokenize("The weather today is") == ["The", "Ġweather", "Ġtoday", "Ġis"]


def test_vocabulary_has_exactly_the_requested_size() -> None:
    assert len(offline_tokenizer(50257)) == 50257


def test_placeholder_ids_decode_readably() -> None:
    assert offline_tokenizer(2048).decode([2000]) == "<r2000>"


@pytest.mark.integration
def test_training_is_identical_across_processes() -> None:
    code = (
        "import hashlib; from equiv_core.models.offline_tokenizer import _trained_tokenizer_json as t; "
        "print(hashlib.sha256(t().encode()).hexdigest())"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == hashlib.sha256(_trained_tokenizer_json().encode()).hexdigest()


def test_too_small_vocabulary_is_refused() -> None:
    with pytest.raises(ValueError, match="vocab_size must be at least"):
        offline_tokenizer(10)
