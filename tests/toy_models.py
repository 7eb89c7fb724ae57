"""Toy models for tests that need a block output form the installed transformers no longer gives."""

from __future__ import annotations

import torch
from torch import nn


class TupleBlock(nn.Module):
    """A decoder-like block that returns ``(hidden, extra)``, as GPT-2 did up to transformers 5.2."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.mix = nn.Linear(width, width)

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, None]:
        # A causal running mean, so an edit at one position reaches later positions, as attention would.
        mixed = torch.cumsum(self.mix(hidden), dim=1) / torch.arange(1, hidden.shape[1] + 1).view(1, -1, 1)
        return hidden + torch.tanh(mixed), None


class TupleModel(nn.Module):
    """Blocks at ``transformer.h`` that return tuples; the model unpacks them like old transformers did."""

    def __init__(self, width: int = 8, depth: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(16, width)
        self.transformer = nn.Module()
        self.transformer.h = nn.ModuleList(TupleBlock(width) for _ in range(depth))
        self.head = nn.Linear(width, 16)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(input_ids)
        for block in self.transformer.h:
            hidden = block(hidden)[0]
        return self.head(hidden)
