"""(b) The hook of example (a), returning early when the pass holds one position: a guard meant to skip something
else, which under the KV cache skips every decode step. Meant: ActAdd at every position (``--recipe actadd-all``):
FAILS, the prompt only (generated tokens 1.. are not steered)."""

from collections.abc import Iterator
from contextlib import contextmanager

from actadd import blocks, hidden, love_hate, with_hidden


@contextmanager
def steer(model, tokenizer) -> Iterator[None]:
    vector = love_hate(model, tokenizer, layer=1)

    def add(_module, _args, output):
        if hidden(output).shape[1] == 1:
            return None
        return with_hidden(output, hidden(output) + vector)

    handle = blocks(model)[1].register_forward_hook(add)
    try:
        yield
    finally:
        handle.remove()
