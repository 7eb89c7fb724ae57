"""Prompts as the model sees them: one batch with real padding and attention masks, special tokens and chat
templates made explicit, and the map from each row's token positions to padded columns.

Positions in this project are *row-relative*: position ``p`` of row ``r`` is its ``p``-th real token (0-based),
whatever padding sits in front of it; the token generated at step ``k`` is position ``n_r + k``. Columns are what
a tensor shows: with left padding row ``r``'s prompt occupies columns ``pad_r .. L-1`` (``L`` the padded length),
with right padding columns ``0 .. n_r-1`` followed by pad tokens; generated tokens always follow column ``L - 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from equiv_core.config.run import Padding, padding_side
from equiv_core.support.errors import UserInputError


@dataclass(frozen=True, slots=True)
class AddedToken:
    """A token the encoding added to the user's text (BOS, a chat-template token), at a row-relative position."""

    position: int
    token: str


@dataclass(frozen=True, slots=True, eq=False)
class PromptBatch:
    """``prompts`` encoded as one batch: ``input_ids`` and ``attention_mask`` are [batch, padded_length] on the
    model's device; ``lengths`` holds each row's real tokens. With a cached prefix (one row, ``--prefix``), the row's
    first ``prefix_length`` tokens are the prefix, prefilled once before ``generate`` (positions count from the
    prefix's first token)."""

    prompts: tuple[str, ...]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    lengths: tuple[int, ...]
    padding: Padding
    added: tuple[tuple[AddedToken, ...], ...]  # per row: the special / template tokens the encoding added
    add_special_tokens: bool
    chat_template: bool
    prefix_length: int = 0  # tokens at the start of the row prefilled into a KV cache before generate

    @property
    def size(self) -> int:
        return len(self.prompts)

    @property
    def padded_length(self) -> int:
        return int(self.input_ids.shape[1])

    def pad(self, row: int) -> int:
        """Pad columns in front of row ``row``'s first real token (0 with right padding)."""
        return self.padded_length - self.lengths[row] if self.padding == "left" else 0

    def column(self, row: int, position: int) -> int:
        """The padded column of row ``row``'s position ``position`` (prompt, or a generated token)."""
        if position < self.lengths[row]:
            return self.pad(row) + position
        return self.padded_length + position - self.lengths[row]

    def position_of(self, row: int, column: int) -> int | None:
        """Row ``row``'s position at ``column``, or None where that column is a pad token."""
        if column >= self.padded_length:
            return self.lengths[row] + column - self.padded_length
        position = column - self.pad(row)
        return position if 0 <= position < self.lengths[row] else None

    def row_ids(self, row: int) -> tuple[int, ...]:
        """Row ``row``'s real token ids, without padding."""
        start = self.pad(row)
        return tuple(int(token) for token in self.input_ids[row, start : start + self.lengths[row]].tolist())

    def alone(self, row: int) -> PromptBatch:
        """Row ``row`` as a batch of one (no padding): the same prompt run alone."""
        ids = torch.tensor([self.row_ids(row)], device=self.input_ids.device, dtype=self.input_ids.dtype)
        return PromptBatch(
            (self.prompts[row],),
            ids,
            torch.ones_like(ids),
            (self.lengths[row],),
            self.padding,
            (self.added[row],),
            self.add_special_tokens,
            self.chat_template,
            self.prefix_length,
        )

    def padded_rows(self) -> tuple[int, ...]:
        """Rows shorter than the longest: the ones padding can break."""
        return tuple(row for row, length in enumerate(self.lengths) if length < self.padded_length)


def _user_text(tokenizer: PreTrainedTokenizerBase, prompt: str, chat_template: bool) -> str:
    if not chat_template:
        return prompt
    return str(
        tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
    )


def _added_tokens(
    tokenizer: PreTrainedTokenizerBase, text: str, special: bool, prompt: str
) -> tuple[list[int], tuple[AddedToken, ...]]:
    """``text`` encoded, and its tokens that are not the user's own ``prompt``: special tokens, and a template's
    text around the prompt. A token is the user's when its characters overlap the prompt's span in ``text``
    (the tokenizer's offsets; a template often merges the prompt's first word with a space before it)."""
    encoded = tokenizer(text, add_special_tokens=special, return_offsets_mapping=True)
    ids = [int(token) for token in encoded.input_ids]
    start = text.find(prompt)
    end = start + len(prompt)
    tokens = tokenizer.convert_ids_to_tokens(ids)
    added = []
    for position, (first, last) in enumerate(encoded.offset_mapping):
        own = start >= 0 and last > first and first < end and last > start
        if not own:
            added.append(AddedToken(position, str(tokens[position])))
    return ids, tuple(added)


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase,
    prompts: tuple[str, ...],
    device: torch.device,
    padding: Padding | None = None,
    add_special_tokens: bool = False,
    chat_template: bool = False,
    prefix: str = "",
) -> PromptBatch:
    """Encode ``prompts`` as one padded batch (``padding`` None: the tokenizer's side). A ``prefix`` (one prompt,
    no chat template) is encoded on its own (with the special tokens, where asked) and the prompt after it without
    them, as a cache that serves several prompts holds the prefix's tokens whatever follows.

    Raises UserInputError for an empty prompt list, an empty prompt, a padding side other than left/right, a
    chat template asked of a tokenizer that has none, or a prefix with several prompts or a chat template.
    """
    if prefix:
        return _prefixed(tokenizer, prefix, prompts, device, padding, add_special_tokens, chat_template)
    if not prompts:
        raise UserInputError("no prompts given; give at least one non-empty prompt")
    for index, prompt in enumerate(prompts):
        if not prompt.strip():
            raise UserInputError(f"prompt {index + 1} is empty; give one non-empty prompt per line")
    side = padding or padding_side(str(tokenizer.padding_side))
    if chat_template and not getattr(tokenizer, "chat_template", None):
        raise UserInputError("--chat-template: this model's tokenizer has no chat template")
    texts = [_user_text(tokenizer, prompt, chat_template) for prompt in prompts]
    special = add_special_tokens and not chat_template  # a rendered template already holds its special tokens
    encoded = [_added_tokens(tokenizer, text, special, prompt) for text, prompt in zip(texts, prompts, strict=True)]
    rows = [ids for ids, _added in encoded]
    longest = max(len(row) for row in rows)
    pad = int(tokenizer.pad_token_id)
    padded = [
        ([pad] * (longest - len(row)) + row) if side == "left" else (row + [pad] * (longest - len(row))) for row in rows
    ]
    masks = [
        ([0] * (longest - len(row)) + [1] * len(row))
        if side == "left"
        else ([1] * len(row) + [0] * (longest - len(row)))
        for row in rows
    ]
    return PromptBatch(
        prompts,
        torch.tensor(padded, device=device),
        torch.tensor(masks, device=device),
        tuple(len(row) for row in rows),
        side,
        tuple(added for _ids, added in encoded),
        add_special_tokens,
        chat_template,
    )


def _prefixed(
    tokenizer: PreTrainedTokenizerBase,
    prefix: str,
    prompts: tuple[str, ...],
    device: torch.device,
    padding: Padding | None,
    add_special_tokens: bool,
    chat_template: bool,
) -> PromptBatch:
    if len(prompts) != 1 or chat_template:
        raise UserInputError("--prefix continues one prompt as written (no --prompts, no --chat-template)")
    if not prompts[0].strip():
        raise UserInputError("prompt 1 is empty; give one non-empty prompt per line")
    prefix_ids, prefix_added = _added_tokens(tokenizer, prefix, add_special_tokens, prefix)
    prompt_ids, prompt_added = _added_tokens(tokenizer, prompts[0], False, prompts[0])
    shifted = tuple(AddedToken(token.position + len(prefix_ids), token.token) for token in prompt_added)
    ids = prefix_ids + prompt_ids
    return PromptBatch(
        prompts,
        torch.tensor([ids], device=device),
        torch.ones(1, len(ids), dtype=torch.long, device=device),
        (len(ids),),
        padding or padding_side(str(tokenizer.padding_side)),
        (prefix_added + shifted,),
        add_special_tokens,
        chat_template,
        len(prefix_ids),
    )


def default_bos_note(tokenizer: PreTrainedTokenizerBase, batch: PromptBatch) -> str:
    """A warning when the tokenizer adds special tokens by default but this run did not: a plain string invoke
    (``tracer.invoke("...")``) then sees more positions than this run, and its position numbers shift."""
    if batch.add_special_tokens or batch.chat_template:
        return ""
    probe = batch.prompts[0]
    with_special, added_tokens = _added_tokens(tokenizer, probe, True, probe)
    own = [position for position in range(len(with_special)) if position not in {t.position for t in added_tokens}]
    in_front = [token for token in added_tokens if own and token.position < own[0]]
    extra = len(in_front)  # tokens appended after the prompt (an EOS) shift no position
    if extra <= 0:
        return ""
    added = ", ".join(str(token.token) for token in in_front)
    return (
        f"the tokenizer adds {added} by default, but this run encodes without special tokens: a plain "
        f'tracer.invoke("...") sees {extra} more position{"s" if extra > 1 else ""} in front, so its positions are '
        f"{extra} higher than the ones printed here (use --add-special-tokens to match it)"
    )
